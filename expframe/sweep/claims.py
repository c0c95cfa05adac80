"""Which process trains a sweep's point: two commands resuming the same sweep folder at once must
never train the same job twice, and a point left by a process that died must be taken over.

A claim is a file `<sweep>/.claims/<config hash>.json`, written (under an flock of the claims
folder) by the process that plans to run the point, naming that process (host, PID, start time),
the job folder, and once a cluster has it, its SLURM job. It is keyed by the point's resolved
configuration, so two commands that write the same point differently (`seed=1` typed, or from a
preset) still meet on one file.
A claim is never removed: after its job it says which folder holds the point; its holder's death
is what frees a point whose folder holds no finished job. A holder is alive while its process runs
(checked on this host) or while SLURM still has its job; a process on another host without a SLURM
job cannot be checked and is presumed alive (the log says which one, to delete its claim by hand).
"""

import fcntl
import json
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from expframe.record import folder_lock
from expframe.record.files import CLAIMS_DIR
from expframe.sweep.slurm_queue import RUNNING, queue_states

LOCK_NAME = ".lock"


@dataclass
class Holder:
    """Who holds a point, and where its job folder is (the name inside the sweep folder)."""

    folder: str
    host: str | None = None
    pid: int | None = None
    start: int | None = None
    slurm_job: str | None = None

    @classmethod
    def read(cls, path: Path) -> "Holder | None":
        """None when the file is unreadable or not a claim (a half-written or foreign file, or one
        whose folder is not a name inside the sweep folder: a sent folder's claims are input too)."""
        try:
            data = json.loads(path.read_text())
            holder = cls(**{k: data.get(k) for k in ("folder", "host", "pid", "start", "slurm_job")})
        except (OSError, ValueError, TypeError, AttributeError):
            return None
        folder = holder.folder
        plain = isinstance(folder, str) and folder not in ("", ".", "..") and "/" not in folder and "\0" not in folder
        return holder if plain else None

    def is_me(self) -> bool:
        mine = folder_lock.owner()
        return (self.host, self.pid, self.start) == (mine["host"], mine["pid"], mine["start"])

    def alive(self) -> bool:
        """A cluster job while squeue has it running; a process as a folder lock's holder is (a
        process on another host cannot be checked: presumed alive, unless a cluster job was its)."""
        if self.slurm_job:
            state = (queue_states([self.slurm_job]) or {}).get(self.slurm_job, "")
            if state.split(" ")[0] in RUNNING:
                return True
            if self.host != socket.gethostname():
                return False
        return folder_lock.alive({"host": self.host, "pid": self.pid, "start": self.start})

    def describe(self) -> str:
        return f"SLURM job {self.slurm_job}" if self.slurm_job else f"process {self.pid} on {self.host}"


def path_of(sweep_dir: Path, config_hash: str) -> Path:
    return sweep_dir / CLAIMS_DIR / f"{config_hash}.json"


@contextmanager
def claims_locked(sweep_dir: Path) -> Iterator[None]:
    """One process at a time reads and writes the claims (an flock: released when the process
    dies; the section is short, a few file reads)."""
    folder = sweep_dir / CLAIMS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK_NAME, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@dataclass
class Claim:
    """The answer for one point: `mine` (run it, in `folder`), `done` (a finished job of it is in
    `folder`) or `held` (a live `holder` runs it, in `folder`)."""

    state: str
    folder: str
    holder: Holder | None = None


def take(sweep_dir: Path, config_hash: str, folder: str, finished: Callable[[str], bool]) -> Claim:
    """Claims the point for this process unless a live holder has it or its folder holds a finished
    job (`finished(folder)`). A dead holder's point is taken over in its folder, where its job
    continues from its checkpoint."""
    path = path_of(sweep_dir, config_hash)
    with claims_locked(sweep_dir):
        holder = Holder.read(path) if path.exists() else None
        if holder is not None and holder.folder:
            if not holder.is_me() and holder.alive():
                return Claim("held", holder.folder, holder)
            if finished(holder.folder):
                return Claim("done", holder.folder)
            folder = holder.folder
        write_claim(path, {"folder": folder, **folder_lock.owner()})
    return Claim("mine", folder)


def note_slurm_job(sweep_dir: Path, config_hash: str, job_id: str) -> None:
    """The cluster's job holds the point from now on, whatever becomes of the submitting process."""
    path = path_of(sweep_dir, config_hash)
    with claims_locked(sweep_dir):
        holder = Holder.read(path)
        if holder is not None and holder.is_me():
            write_claim(path, {**asdict(holder), "slurm_job": job_id})


def write_claim(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)
