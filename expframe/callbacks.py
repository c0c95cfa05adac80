"""Hydra callbacks: reject a bad config before any job folder exists; summarise a sweep at its end."""

import logging
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, ListConfig, OmegaConf

from expframe import folder_lock
from expframe.added_keys import check_added_keys
from expframe.checkpoint import check_resumable
from expframe.data.sources import check_available
from expframe.errors import ConfigError
from expframe.outputs import check_writable
from expframe.redact import mask_run_folder
from expframe.report_worker import Worker
from expframe.sweeps import check_sweep_values, check_sweeper_settings, log_status_counts
from expframe.validate import validate

log = logging.getLogger("expframe")


def check_output_folder(key: str, where: object) -> Path:
    """A run or sweep folder of its own: named, not the project folder or one above it (its results
    would mix with the project's files and a report would read every run below it), creatable."""
    if not isinstance(where, str) or not where.strip():
        raise ConfigError(key, where, "must name a folder (empty would write into the current folder)")
    path = Path(where).absolute().resolve()
    here = Path.cwd().resolve()
    if path == here or path in here.parents:
        raise ConfigError(
            key,
            where,
            f"is {'the current folder' if path == here else 'above the current folder'}: name a folder of its own",
        )
    check_writable(key, where)
    return path


def check_name(key: str, name: object) -> None:
    """Names that Hydra or Optuna turn into file names (the job's log, the study's database)."""
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(key, name, "must be a non-empty name")
    if "/" in name or "\\" in name or name in (".", "..") or "\0" in name:
        raise ConfigError(key, name, "must be a name, not a path (no '/', '\\\\', '.' or '..')")
    if len(name.encode()) > 200:
        raise ConfigError(key, name, f"is {len(name.encode())} bytes long; at most 200")


def check_sweep_subdir(cfg: DictConfig) -> None:
    """Job folders stay inside the sweep folder, whatever `hydra.sweep.subdir` says (checked as written,
    before the job number it names exists)."""
    raw = OmegaConf.to_container(cfg.hydra.sweep, resolve=False).get("subdir")
    if not isinstance(raw, str) or not raw.strip() or raw.startswith("/") or ".." in raw.replace("${", "").split("/"):
        raise ConfigError("hydra.sweep.subdir", raw, "must be a relative folder name inside the sweep folder")


def check_hydra_files(cfg: DictConfig) -> None:
    """Hydra's own files (its `.hydra/` copy, the job log) stay in the job's folder."""
    subdir = OmegaConf.select(cfg, "hydra.output_subdir")
    if subdir is not None:
        check_name("hydra.output_subdir", subdir)
    for logging_key in ("hydra.job_logging", "hydra.hydra_logging"):
        handlers = OmegaConf.select(cfg, f"{logging_key}.handlers") or {}
        for name in handlers:
            raw = OmegaConf.to_container(handlers[name], resolve=False).get("filename")
            inside = isinstance(raw, str) and raw.startswith("${hydra.runtime.output_dir}/") and ".." not in raw
            if raw is not None and not inside:
                key = f"{logging_key}.handlers.{name}.filename"
                raise ConfigError(key, raw, "must be a file in the job's folder (${hydra.runtime.output_dir}/<name>)")


def check_new_run_folder(key: str, path: Path) -> None:
    """Finished results are never overwritten: a folder that holds a run is continued with resume=."""
    held = next((name for name in ("metrics.json", "model.pt", ".hydra") if (path / name).exists()), None)
    if held is not None:
        raise ConfigError(
            key, str(path), f"already holds a run ({held}): choose another folder, or resume={path} to continue it"
        )
    check_own_folder(key, path)


def check_own_folder(key: str, path: Path) -> None:
    """An existing folder that holds other files (`hydra.run.dir=conf`) would get a run's files mixed in."""
    others = sorted(p.name for p in path.iterdir() if p.name != folder_lock.LOCK_FILE) if path.is_dir() else []
    if others:
        raise ConfigError(key, str(path), f"holds other files ({', '.join(others[:3])}): name a new or empty folder")


def check_new_sweep_folder(key: str, path: Path) -> None:
    """A sweep folder that already holds jobs would have them overwritten by job number."""
    jobs = [p.name for p in path.iterdir() if (p / ".hydra").is_dir()] if path.is_dir() else []
    if not jobs:
        check_own_folder(key, path)
    if jobs:
        raise ConfigError(
            key,
            str(path),
            f"already holds {len(jobs)} job folder(s) of a sweep ({sorted(jobs)[0]}, ...): choose another folder",
        )


def check_outputs(cfg: DictConfig, sweep: bool) -> None:
    key = "hydra.sweep.dir" if sweep else "hydra.run.dir"
    path = check_output_folder(key, OmegaConf.select(cfg, key))
    check_name("hydra.job.name", OmegaConf.select(cfg, "hydra.job.name"))
    check_hydra_files(cfg)
    if sweep:
        check_sweep_subdir(cfg)
        check_new_sweep_folder(key, path)
    elif not cfg.get("resume"):
        check_new_run_folder(key, path)
    folder_lock.acquire(path, key)


def check_config(cfg: DictConfig, sweep: bool = False) -> None:
    """Hydra turns exceptions in callbacks into warnings; SystemExit is what stops it here.

    Checks that need the loaded data (a split that leaves nothing to train on, class weights that do
    not match the classes) happen once, in the job; here the data's files are only checked to exist.
    The output folder is checked and locked last, so a refused config leaves no folder behind.
    """
    try:
        if "hydra" in cfg:
            check_added_keys(list(cfg.hydra.overrides.task), dict(cfg.hydra.runtime.choices))
        validate(cfg)
        if cfg.get("resume"):
            check_resumable(cfg)
        if sweep:
            check_sweep_values(cfg)
            objectives = len(cfg.objective) if isinstance(cfg.objective, ListConfig) else 1
            check_sweeper_settings(cfg, objectives)
            if "study_name" in cfg.hydra.sweeper:
                check_name("hydra.sweeper.study_name", OmegaConf.select(cfg, "hydra.sweeper.study_name"))
        check_available(cfg.dataset.source)
        if "hydra" in cfg:
            check_outputs(cfg, sweep)
    except ConfigError as e:
        sys.exit(f"error: {e}")


def check_not_a_sweep(cfg: DictConfig) -> None:
    """A preset that carries its own grid (`hydra.sweeper.params`) would silently train one point
    without -m; Hydra 1.4 refuses `hydra.mode` set by a preset, so say how to run it."""
    params = OmegaConf.select(cfg, "hydra.sweeper.params")
    if params:
        choices = OmegaConf.select(cfg, "hydra.runtime.choices") or {}
        preset = next((f"+experiment={v}" for k, v in choices.items() if k == "experiment" and v), None)
        preset = preset or next(
            (f"hparams_search={v}" for k, v in choices.items() if k == "hparams_search" and v), None
        )
        raise ConfigError(
            "hydra.sweeper.params",
            ", ".join(map(str, params)),
            f"this is a sweep: add -m (python train.py -m {preset or '...'} ...)",
        )


class ExpframeCallback(Callback):
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            check_not_a_sweep(config)
        except ConfigError as e:
            sys.exit(f"error: {e}")
        check_config(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_config(config, sweep=True)
        self.sweep_checked = True

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Hydra has just saved the job's `.hydra/` files (and the sweeper its multirun.yaml)."""
        sweep = OmegaConf.select(config, "hydra.sweep.dir") if config.hydra.mode == RunMode.MULTIRUN else None
        mask_run_folder(Path(config.hydra.runtime.output_dir), Path(sweep) if sweep else None)

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        folder_lock.release(Path(config.hydra.run.dir).absolute().resolve())

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Hydra calls it even when on_multirun_start refused the sweep: then there is nothing to sum up."""
        if not getattr(self, "sweep_checked", False):
            Worker.cancel()
            return
        summarise_sweep(Path(config.hydra.sweep.dir), config.report.auto)
        folder_lock.release(Path(config.hydra.sweep.dir).absolute().resolve())


def summarise_sweep(sweep_dir: Path, auto_report: bool) -> None:
    """One line per status, then the report: at the end of a sweep, or when Ctrl-C stops it."""
    log_status_counts(sweep_dir)
    has_jobs = sweep_dir.is_dir() and any((p / ".hydra").is_dir() for p in sweep_dir.iterdir())
    if not has_jobs:
        Worker.cancel()
        return
    if not auto_report:
        Worker.stop()
        return
    try:
        markdown = Worker.report(sweep_dir)
        if markdown is None:
            from expframe.report import report

            markdown = report([sweep_dir], sweep_dir)
        log.info("report written to %s:\n%s", sweep_dir, markdown)
    except (Exception, SystemExit) as e:
        log.warning("no report for %s: %s", sweep_dir, e)
