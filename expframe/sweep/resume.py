"""A grid sweep run again into its own folder (`hydra.sweep.dir=<folder>`) finishes what is missing
and grows: each point of the command's grid is matched to a job folder by its configuration.

- done: a job folder holds the point's configuration and a finished result (ok, diverged or
  pruned: the same config diverges again); its files are not touched.
- to continue: its folder holds the configuration but no finished result (failed, interrupted,
  killed); the job runs again there, from its last.ckpt when it has one.
- new: no folder holds it; the job gets the next free job number.
A folder that holds a point's overrides but was run with other values (conf/ edited between the
two commands) is never reused: the command stops naming the keys, unless `sweep.rerun_changed=true`.

Matching by configuration costs a composition (~0.1 s a point). A finished job records the digest
of every file of conf/ and its overrides (`sweep_point` in metrics.json): equal inputs compose the
same configuration, so a done point is found without composing it. Any other point is composed
and compared, value by value, with the resolved `.hydra/config.yaml` of the folders left over.
"""

import hashlib
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from expframe.errors import ConfigError
from expframe.record.files import CONFIG_FILE, HYDRA_DIR, METRICS_FILE
from expframe.sweep import claims
from expframe.train.checkpoint import HOW_IT_RUNS, flat, missing_keys, task_items

log = logging.getLogger("expframe")

DONE = ("ok", "diverged", "pruned")
# keys that say how a command runs, not what its jobs train: never a reason to run a point again
SWEEP_LEVEL = HOW_IT_RUNS
# carries the sweeping process's digest of conf/ to each job (hydra.job.env_set, so every launcher
# passes it on): a job composed from other files than the plan saw records no sweep_point
DIGEST_VAR = "EXPFRAME_CONF_DIGEST"
OVERRIDES_FILE = HYDRA_DIR / "overrides.yaml"

# the plan of the sweep this process runs (its end-of-sweep summary covers these points only)
ACTIVE: "Plan | None" = None


def conf_digest(config_dirs: list[Path]) -> str:
    """sha256 over every file (relative name and bytes) of the config folders, in name order."""
    h = hashlib.sha256()
    for root in config_dirs:
        for path in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
            h.update(str(path.relative_to(root)).encode() + b"\0")
            h.update(path.read_bytes() + b"\0")
    return h.hexdigest()


def config_dirs(config_sources: object) -> list[Path]:
    """The file folders Hydra composes from (`hydra.runtime.config_sources`); packaged sources
    (Hydra's and its plugins') hold only Hydra's own node."""
    return [Path(s["path"]) for s in config_sources if s.get("schema") == "file" and Path(s["path"]).is_dir()]


def point_key(digest: str, overrides: list[str]) -> str:
    return hashlib.sha256("\0".join([digest, *overrides]).encode()).hexdigest()[:32]


def compared(task: dict) -> dict[str, object]:
    """A job's resolved task config as compared: flat, sweep-level keys left out, keys added to
    expframe after the folder was written given the value it ran with."""
    values = {**missing_keys(task), **flat(task)}
    return {k: v for k, v in values.items() if k.split(".")[0] not in SWEEP_LEVEL}


def config_hash(values: dict[str, object]) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:32]


def identity(overrides: list[str]) -> dict[str, str]:
    """What a command line says of one point: key -> value as typed, Hydra's own keys and the
    sweep-level ones left out."""
    pairs = [(k.lstrip("+~"), v) for k, _, v in (o.partition("=") for o in overrides)]
    return {k: v for k, v in pairs if k.split(".")[0].split("/")[0] not in ("hydra", *SWEEP_LEVEL)}


def quoted(name: str) -> str:
    """A folder name as a quoted Hydra override value: quotes (and the backslashes before them)
    escaped, `${` kept literal."""
    text = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", name)
    text = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, text)
    return "'" + text.replace("${", "\\${") + "'"


def job_number(folder: str) -> int | None:
    """Hydra's job number at the head of a job folder's name (`12_optimizer=adam` -> 12)."""
    head = folder.split("_", 1)[0]
    return int(head) if head.isdigit() else None


@dataclass
class JobFolder:
    path: Path
    status: str | None
    key: str | None

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def number(self) -> int | None:
        return job_number(self.name)

    def values(self) -> dict[str, object] | None:
        """Its saved config as compared; None when it cannot be read (then it matches nothing)."""
        try:
            saved = OmegaConf.to_container(OmegaConf.load(self.path / CONFIG_FILE), resolve=True)
        except Exception:  # a missing, truncated or foreign file: not a job this plan can reuse
            return None
        return compared(saved) if isinstance(saved, dict) else None

    def overrides(self) -> dict[str, str] | None:
        try:
            saved = OmegaConf.to_container(OmegaConf.load(self.path / OVERRIDES_FILE))
        except Exception:
            return None
        return identity([str(o) for o in saved]) if isinstance(saved, list) else None


def read_status(job: Path) -> tuple[str | None, str | None]:
    """(status, sweep_point) of a job folder's metrics.json; (None, None) without a readable one."""
    try:
        metrics = json.loads((job / METRICS_FILE).read_text())
    except (OSError, ValueError):
        return None, None
    if not isinstance(metrics, dict):
        return None, None
    status, key = metrics.get("status"), metrics.get("sweep_point")
    return (status if isinstance(status, str) else None), (key if isinstance(key, str) else None)


def job_folders(sweep_dir: Path) -> list[JobFolder]:
    if not sweep_dir.is_dir():
        return []
    jobs = [p for p in sweep_dir.iterdir() if (p / HYDRA_DIR).is_dir()]
    return [JobFolder(p, *read_status(p)) for p in sorted(jobs)]


def finished(sweep_dir: Path, folder: str) -> bool:
    return read_status(sweep_dir / folder)[0] in DONE


@dataclass
class Point:
    """One point of the grid: its overrides, what is to be done, and its job folder's name."""

    overrides: list[str]
    state: str = ""  # done | continue | new | held
    folder: str = ""
    config: DictConfig | None = None
    values: dict = field(default_factory=dict)
    holder: str = ""

    def launch(self, digest: str) -> list[str]:
        """What the launcher composes the job from: the point, its folder, the plan's digest."""
        return [
            *self.overrides,
            f"hydra.sweep.subdir={quoted(self.folder)}",
            f"hydra.job.env_set.{DIGEST_VAR}={digest}",
        ]


@dataclass
class Plan:
    sweep_dir: Path
    points: list[Point]
    outside: int  # job folders of the sweep folder that are not points of this grid
    digest: str = ""

    def count(self, state: str) -> int:
        return sum(p.state == state for p in self.points)

    def line(self) -> str:
        n = len(self.points)
        text = (
            f"sweep {self.sweep_dir}: {n} point{'s' if n != 1 else ''}: {self.count('done')} done, "
            f"{self.count('continue')} to continue, {self.count('new')} new"
        )
        held = [p for p in self.points if p.state == "held"]
        if held:
            text += f", {len(held)} run by {held[0].holder}{' and others' if len({p.holder for p in held}) > 1 else ''}"
        if self.outside:
            text += f" ({self.outside} other job folder{'s' if self.outside != 1 else ''} there: not in this grid)"
        return text

    def to_run(self) -> list[Point]:
        return [p for p in self.points if p.state in ("continue", "new")]

    def folders(self) -> list[Path]:
        return [self.sweep_dir / p.folder for p in self.points]

    def note_cluster_job(self, overrides: list[str], job_id: str) -> None:
        """A SLURM job now runs the point launched with `overrides`: its claim names the job, so
        the point stays held while the cluster runs it, whatever becomes of this process."""
        point = next((p for p in self.to_run() if p.launch(self.digest) == list(overrides)), None)
        if point is not None:
            claims.note_slurm_job(self.sweep_dir, config_hash(point.values), job_id)


def plan(
    sweep_dir: Path,
    grid: list[list[str]],
    compose: Callable[[list[str]], DictConfig],
    digest: str,
    rerun_changed: bool,
) -> Plan:
    """Each point of `grid` matched to the folders of `sweep_dir`, composed where needed; claims
    taken for the points this process will run. Raises ConfigError when a folder holds a point run
    with other values (unless `rerun_changed`)."""
    jobs = job_folders(sweep_dir)
    used: set[str] = set()
    by_key: dict[str, list[JobFolder]] = {}
    for job in jobs:
        if job.status in DONE and job.key:
            by_key.setdefault(job.key, []).append(job)
    points = [Point(list(o)) for o in grid]
    for point in points:
        found = next((j for j in by_key.get(point_key(digest, point.overrides), []) if j.name not in used), None)
        if found is not None:
            point.state, point.folder = "done", found.name
            used.add(found.name)
    pending = [p for p in points if not p.state]
    if pending:
        match_by_config(pending, [j for j in jobs if j.name not in used], used, compose, digest, rerun_changed)
        number_new(pending, jobs)
        claim(sweep_dir, pending)
    named = {p.folder for p in points}
    return Plan(sweep_dir, points, sum(j.name not in named for j in jobs), digest)


def match_by_config(
    pending: list[Point],
    left: list[JobFolder],
    used: set[str],
    compose: Callable[[list[str]], DictConfig],
    digest: str,
    rerun_changed: bool,
) -> None:
    by_hash: dict[str, list[JobFolder]] = {}
    values: dict[str, dict] = {}
    for job in left:
        saved = job.values()
        if saved is not None:
            values[job.name] = saved
            by_hash.setdefault(config_hash(saved), []).append(job)
    changed: list[tuple[Point, JobFolder]] = []
    identities: dict[str, dict | None] | None = None
    for point in pending:
        point.config = compose([*point.overrides, f"hydra.job.env_set.{DIGEST_VAR}={digest}"])
        point.values = compared(
            {
                k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
                for k, v in task_items(point.config)
            }
        )
        same = sorted(
            (j for j in by_hash.get(config_hash(point.values), []) if j.name not in used),
            key=lambda j: (j.status not in DONE, j.name),
        )
        if same:
            point.state, point.folder = ("done" if same[0].status in DONE else "continue"), same[0].name
            used.add(point.folder)
            continue
        if identities is None:  # read once, and only when a point is neither done nor continued
            identities = {j.name: j.overrides() for j in left if j.name in values}
        mine = identity(point.overrides)
        other = next((j for j in left if j.name not in used and identities.get(j.name) == mine), None)
        if other is not None and not rerun_changed:
            changed.append((point, other))
            used.add(other.name)
        point.state = "new"
    if changed:
        raise changed_error(changed, values)


def changed_error(changed: list[tuple[Point, JobFolder]], values: dict[str, dict]) -> ConfigError:
    keys: list[str] = []
    for point, job in changed:
        saved = values[job.name]
        for key in sorted(saved.keys() | point.values.keys()):
            if saved.get(key) != point.values.get(key) and key not in keys:
                keys.append(key)
    folders = ", ".join(j.name for _, j in changed[:3]) + (", ..." if len(changed) > 3 else "")
    return ConfigError(
        "hydra.sweep.dir",
        str(changed[0][1].path.parent),
        f"{len(changed)} job folder(s) ({folders}) hold points of this command run with other values of "
        f"{', '.join(keys[:6])}{', ...' if len(keys) > 6 else ''} (conf/ edited since?): nothing was run; "
        "sweep.rerun_changed=true runs those points anew in new folders, the old ones kept",
    )


def number_new(pending: list[Point], jobs: list[JobFolder]) -> None:
    """New points take the next free job numbers, in grid order, named as Hydra names job folders."""
    taken = [j.number for j in jobs if j.number is not None]
    number = max(taken) + 1 if taken else 0
    for point in pending:
        if point.state != "new":
            continue
        with open_dict(point.config):
            point.config.hydra.job.num = number
            point.config.hydra.job.id = str(number)
        point.folder = str(OmegaConf.select(point.config, "hydra.sweep.subdir"))
        if "/" in point.folder:  # a resumed grid finds its jobs directly inside the sweep folder
            raise ConfigError("hydra.sweep.subdir", point.folder, "must name one folder, directly in the sweep folder")
        number += 1


def claim(sweep_dir: Path, pending: list[Point]) -> None:
    """The points this process runs are claimed; one a live process runs is left to it, one a
    process finished meanwhile is done."""
    for point in pending:
        if point.state == "done":
            continue
        got = claims.take(sweep_dir, config_hash(point.values), point.folder, lambda f: finished(sweep_dir, f))
        if got.state == "held":
            point.state, point.holder = "held", got.holder.describe()
        elif got.state == "done":
            point.state = "done"
        else:
            point.state = "continue" if (sweep_dir / got.folder / HYDRA_DIR).is_dir() else "new"
        point.folder = got.folder
        if point.state in ("continue", "new"):
            with open_dict(point.config):
                point.config.hydra.sweep.subdir = point.folder.replace("${", "\\${")
