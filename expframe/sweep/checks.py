"""Sweep-level checks that no single job can do: every point of a grid, the sweeper's settings, the
search space, a reachable SLURM. Run by the callbacks before the sweep folder is written."""

import copy
import difflib
import logging
import os
import subprocess
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict, read_write

from expframe.config.validate import check_values
from expframe.errors import ConfigError

log = logging.getLogger("expframe")


def check_sweep_values(cfg: DictConfig) -> None:
    """Every value of a command-line sweep (`key=a,b`) and of the sweeper's search space (Optuna's
    `hydra.sweeper.params`: choice, range, interval bounds), checked with the same rules before the
    first job starts. A sweep with no point to run is refused."""
    sources = [Path(src.path) for src in cfg.hydra.runtime.config_sources if src.schema == "file"]
    # what a job receives: Hydra's own node is most of the config and no check reads it
    job_part = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    parser = OverridesParser.create()
    typed = parser.parse_overrides(list(cfg.hydra.overrides.task))
    params = OmegaConf.select(cfg, "hydra.sweeper.params") or {}
    searched = parser.parse_overrides([f"{k}={v}" for k, v in params.items()])
    for override in searched:
        check_searched_key(job_part, override.get_key_element(), sources)
    for override in [*typed, *searched]:
        if not override.is_sweep_override():
            continue
        key = override.get_key_element().lstrip("+~")
        values = None
        if override.is_interval_sweep():
            interval = override.value()
            values = [interval.start, interval.end]
            if "int" in interval.tags:
                values = [int(v) for v in values]
        if values is None:
            values = list(override.sweep_iterator())
            if not values:
                raise ConfigError(
                    key, override.input_line.partition("=")[2], "gives no value: the sweep has nothing to run"
                )
        elif not values[0] < values[1]:
            raise ConfigError(key, override.input_line.partition("=")[2], "must be interval(low, high) with low < high")
        if any((src / key).is_dir() for src in sources):
            options = sorted({p.stem for src in sources for p in (src / key).glob("*.yaml")})
            for value in values:
                if str(value) not in options:
                    raise ConfigError(key, value, f"must be one of {', '.join(options)}")
            continue
        trial = copy.deepcopy(job_part)  # one copy per key: the checks only read it (~10 ms a copy)
        for value in values:
            with read_write(trial), open_dict(trial):
                OmegaConf.update(trial, key, value, force_add=True)
            check_values(trial)


def check_searched_key(job_part: DictConfig, key: str, sources: list[Path]) -> None:
    """A search space's key must be a group or a key the config has (a torch class's argument is left
    to the dry build): Optuna would otherwise add `epoch` beside `epochs` and vary nothing."""
    if any((src / key).is_dir() for src in sources):
        return
    parent, _, name = key.rpartition(".")
    node = OmegaConf.select(job_part, parent) if parent else job_part
    if isinstance(node, DictConfig) and (name in node or "_target_" in node):
        return
    known = list(node) if isinstance(node, DictConfig) else []
    near = difflib.get_close_matches(name, [str(k) for k in known], n=1)
    hint = f": did you mean {'.'.join(filter(None, [parent, near[0]]))}?" if near else ""
    raise ConfigError(
        f"hydra.sweeper.params.{key}", OmegaConf.select(job_part, key), f"is not a key of the config{hint}"
    )


def check_sweeper_settings(cfg: DictConfig, objectives: int) -> None:
    """What the sweeper and launcher would otherwise find out mid-sweep, or never (a study of 0 trials
    runs nothing and exits 0)."""
    sweeper, launcher = cfg.hydra.sweeper, cfg.hydra.launcher
    for name in ("n_trials", "n_jobs", "max_batch_size"):
        value = sweeper.get(name)
        optional = name == "max_batch_size" and value is None  # null: the whole sweep as one batch
        if name in sweeper and not optional and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ConfigError(f"hydra.sweeper.{name}", value, "must be an integer >= 1")
    seed = OmegaConf.select(sweeper, "sampler.seed", default=None)
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**32):
        raise ConfigError("hydra.sweeper.sampler.seed", seed, "must be an integer in [0, 2**32 - 1], or null")
    rate = sweeper.get("max_failure_rate")
    if "max_failure_rate" in sweeper and (
        not isinstance(rate, int | float) or isinstance(rate, bool) or not 0 <= rate <= 1
    ):
        raise ConfigError("hydra.sweeper.max_failure_rate", rate, "must be a number in [0, 1]")
    if "n_jobs" in launcher:
        value, cores = launcher.get("n_jobs"), os.cpu_count() or 1
        if not isinstance(value, int) or isinstance(value, bool) or value == 0 or value < -cores:
            raise ConfigError(
                "hydra.launcher.n_jobs",
                value,
                f"must be an integer >= 1, or -1 .. -{cores} (all cores, all but one, ...)",
            )
    if "direction" in sweeper:
        direction = sweeper.get("direction")
        directions = list(direction) if isinstance(direction, ListConfig) else [direction]
        for d in directions:
            if str(d).split(".")[-1].lower() not in ("minimize", "maximize"):
                raise ConfigError("hydra.sweeper.direction", d, "must be minimize or maximize")
        if len(directions) != objectives:
            raise ConfigError(
                "hydra.sweeper.direction",
                OmegaConf.to_container(direction) if isinstance(direction, ListConfig) else direction,
                f"gives {len(directions)} direction(s) for {objectives} objective(s) (objective={cfg.objective})",
            )


def check_slurm_reachable() -> None:
    """Before the sweep's folder is written: sbatch fails late, in several lines of its own."""
    try:
        done = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise ConfigError("hydra/launcher", "submitit_slurm", "needs SLURM's commands (squeue, sbatch)") from None
    except subprocess.TimeoutExpired:
        raise ConfigError("hydra/launcher", "submitit_slurm", "SLURM did not answer squeue within 30 s") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise ConfigError("hydra/launcher", "submitit_slurm", f"SLURM is not reachable (squeue: {last})")
