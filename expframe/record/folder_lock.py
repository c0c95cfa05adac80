"""One writer per run or sweep folder: two sweeps started at once into the same `hydra.sweep.dir`
would interleave two processes' files in each job folder.

The lock is a file in the folder holding the writer's host, PID and process start time. A lock
whose process is gone (kill -9, a closed laptop) is taken over, and the log says so.
"""

import atexit
import json
import logging
import os
import socket
from pathlib import Path

from expframe.errors import ConfigError
from expframe.record.files import LOCK_FILE

log = logging.getLogger("expframe")

_HELD: set[Path] = set()


def process_start(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux): a PID reused by another process
    has another start time."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def owner() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "start": process_start(os.getpid())}


def alive(holder: dict) -> bool:
    """A holder on another host cannot be checked: presumed alive (its folder is on a shared disk)."""
    if holder.get("host") != socket.gethostname():
        return True
    try:
        pid = int(holder["pid"])
        os.kill(pid, 0)
    except (KeyError, TypeError, ValueError, ProcessLookupError):
        return False
    except PermissionError:
        pass
    return holder.get("start") is None or process_start(pid) == holder.get("start")


def acquire(folder: Path, key: str) -> None:
    """Takes `folder`'s lock for this process, or raises ConfigError naming the live holder."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    mine = owner()
    for _ in range(3):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            try:
                holder = json.loads(path.read_text())
            except (OSError, ValueError):
                holder = {}
            if not isinstance(holder, dict):
                holder = {}
            if holder.get("host") == mine["host"] and holder.get("pid") == mine["pid"]:
                _HELD.add(path)
                return
            if holder and alive(holder):
                raise ConfigError(
                    key,
                    str(folder),
                    f"is being written by process {holder.get('pid')} on {holder.get('host')}: "
                    "wait for it to end, or choose another folder",
                ) from None
            log.warning(
                "%s: took over the lock left by process %s, which is no longer running", folder, holder.get("pid")
            )
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(mine, f)
        _HELD.add(path)
        return
    raise ConfigError(key, str(folder), "its lock could not be taken (another process keeps taking it)")


def release(folder: Path) -> None:
    path = folder / LOCK_FILE
    if path in _HELD:
        _HELD.discard(path)
        path.unlink(missing_ok=True)
        try:
            folder.rmdir()  # a sweep refused or stopped before its first job leaves no empty folder
        except OSError:
            pass


def release_all() -> None:
    for path in list(_HELD):
        release(path.parent)


atexit.register(release_all)
