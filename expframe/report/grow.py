"""The command that grows a grid sweep to more seeds in its own folder: a report that says an axis
needs more seeds than were run prints it, and running it trains only the new jobs
(expframe.sweep.resume)."""

import shlex
from pathlib import Path

from omegaconf import OmegaConf

from expframe.record.files import HYDRA_DIR, MULTIRUN_FILE

# Hydra's own overrides a sweep records that the command must not repeat (the folder is given anew)
NOT_REPEATED = ("hydra.mode=", "hydra.sweep.dir=")


def sweep_folder(paths: list[Path]) -> Path | None:
    """The sweep folder the report reads: the one given, or the one holding the job folders given."""
    if len(paths) == 1 and (paths[0] / MULTIRUN_FILE).is_file():
        return paths[0]
    parents = {p.parent for p in paths if (p / HYDRA_DIR).is_dir()}
    if len(parents) == 1 and (next(iter(parents)) / MULTIRUN_FILE).is_file():
        return next(iter(parents))
    return None


def more_seeds(run: list[int], wanted: int) -> str:
    """`range(0,N)` when the seeds run are 0..k-1, else those seeds and the smallest unused ones."""
    if sorted(run) == list(range(len(run))):
        return f"range(0,{wanted})"
    seeds, candidate = sorted(run), 0
    while len(seeds) < wanted:
        if candidate not in seeds:
            seeds.append(candidate)
        candidate += 1
    return ",".join(map(str, sorted(seeds)))


def grow_command(sweep_dir: Path, seeds_run: list[int], wanted: int) -> str | None:
    """`python train.py -m <the sweep's overrides, seed widened> hydra.sweep.dir=<folder>`, or None
    for a sweep whose command is not on record, or not a grid (an Optuna study grows by trials)."""
    try:
        saved = OmegaConf.load(sweep_dir / MULTIRUN_FILE)
        sweeper = str(OmegaConf.select(saved, "hydra.sweeper._target_", default=""))
        task = [str(o) for o in OmegaConf.select(saved, "hydra.overrides.task", default=[])]
        own = [str(o) for o in OmegaConf.select(saved, "hydra.overrides.hydra", default=[])]
    except Exception:  # a folder without a readable record of its command: no command to give
        return None
    if "Optuna" in sweeper:
        return None
    seeds = f"seed={more_seeds(seeds_run, wanted)}"
    task = [seeds if o.lstrip("+").split("=", 1)[0] == "seed" else o for o in task]
    if seeds not in task:
        task.append(seeds)
    own = [o for o in own if not o.startswith(NOT_REPEATED)]
    return shlex.join(["python", "train.py", "-m", *task, *own, f"hydra.sweep.dir={sweep_dir}"])
