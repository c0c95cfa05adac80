"""Hydra callbacks: reject a bad config before any job folder exists; summarise a sweep at its end."""

import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from expframe.checkpoint import check_resumable
from expframe.data.sources import check_available
from expframe.errors import ConfigError
from expframe.redact import mask_run_folder
from expframe.report_worker import Worker
from expframe.sweeps import check_sweep_values, log_status_counts
from expframe.validate import validate

log = logging.getLogger("expframe")


def check_writable(key: str, where: str) -> None:
    """The output folder must be creatable: its nearest existing ancestor a folder we can write to
    (probed with a temporary file, since root passes every permission check but a read-only mount)."""
    path = Path(where).absolute()
    ancestor = next(p for p in (path, *path.parents) if p.exists())
    if not ancestor.is_dir():
        raise ConfigError(key, where, f"cannot be created: {ancestor} is a file")
    try:
        with tempfile.TemporaryFile(dir=ancestor):
            pass
    except OSError as e:
        raise ConfigError(key, where, f"cannot be created: {ancestor} is not writable ({e.strerror})") from None


def check_config(cfg: DictConfig, sweep: bool = False) -> None:
    """Hydra turns exceptions in callbacks into warnings; SystemExit is what stops it here.

    Checks that need the loaded data (a split that leaves nothing to train on, class weights that do
    not match the classes) happen once, in the job; here the data's files are only checked to exist.
    """
    try:
        if "hydra" in cfg:
            key = "hydra.sweep.dir" if sweep else "hydra.run.dir"
            check_writable(key, OmegaConf.select(cfg, key))
        validate(cfg)
        if cfg.get("resume"):
            check_resumable(cfg)
        if sweep:
            check_sweep_values(cfg)
        check_available(cfg.dataset.source)
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

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Hydra has just saved the job's `.hydra/` files (and the sweeper its multirun.yaml)."""
        sweep = OmegaConf.select(config, "hydra.sweep.dir") if config.hydra.mode == RunMode.MULTIRUN else None
        mask_run_folder(Path(config.hydra.runtime.output_dir), Path(sweep) if sweep else None)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        summarise_sweep(Path(config.hydra.sweep.dir), config.report.auto)


def summarise_sweep(sweep_dir: Path, auto_report: bool) -> None:
    """One line per status, then the report: at the end of a sweep, or when Ctrl-C stops it."""
    log_status_counts(sweep_dir)
    if not (auto_report and sweep_dir.is_dir()):
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
