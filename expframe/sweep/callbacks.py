"""Hydra callbacks: reject a bad config before any job folder exists; summarise a sweep at its end."""

import logging
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, ListConfig, OmegaConf

from expframe.config.added_keys import check_added_keys
from expframe.config.output_folders import check_name, check_outputs
from expframe.config.retrain_parent import check_retrain
from expframe.config.validate import validate
from expframe.data.availability import check_available
from expframe.errors import ConfigError, short_reason
from expframe.record import folder_lock
from expframe.record.redact import mask_run_folder
from expframe.sweep.checks import check_slurm_reachable, check_sweep_values, check_sweeper_settings
from expframe.sweep.report_worker import Worker
from expframe.sweep.summary import summarise_sweep
from expframe.train.checkpoint import check_resumable

log = logging.getLogger("expframe")


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
        check_retrain(cfg)
        if cfg.get("resume"):
            check_resumable(cfg)
        if sweep:
            check_sweep_values(cfg)
            objectives = len(cfg.objective) if isinstance(cfg.objective, ListConfig) else 1
            check_sweeper_settings(cfg, objectives)
            if "SlurmLauncher" in str(cfg.hydra.launcher.get("_target_", "")):
                check_slurm_reachable()
            if "study_name" in cfg.hydra.sweeper:
                check_name("hydra.sweeper.study_name", OmegaConf.select(cfg, "hydra.sweeper.study_name"))
        check_available(cfg.dataset.source)
        if "hydra" in cfg:
            check_outputs(cfg, sweep)
    except ConfigError as e:
        sys.exit(f"error: {e}")
    except Exception as e:  # Hydra would turn it into a warning and start the run anyway
        log.debug("a check failed unexpectedly", exc_info=True)
        sys.exit(f"error: the checks before the run failed: {short_reason(e)} (HYDRA_FULL_ERROR=1 shows where)")


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
