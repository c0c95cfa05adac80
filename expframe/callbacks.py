"""Hydra callbacks: reject a bad config before any job folder exists; summarise a sweep at its end."""

import logging
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from expframe.data.sources import check_available
from expframe.errors import ConfigError
from expframe.sweeps import check_sweep_values, log_status_counts
from expframe.validate import validate

log = logging.getLogger("expframe")


def check_config(cfg: DictConfig, sweep: bool = False) -> None:
    """Hydra turns exceptions in callbacks into warnings; SystemExit is what stops it here.

    Checks that need the loaded data (a split that leaves nothing to train on, class weights that do
    not match the classes) happen once, in the job; here the data's files are only checked to exist.
    """
    try:
        validate(cfg)
        if sweep:
            check_sweep_values(cfg)
        check_available(cfg.dataset.source)
    except ConfigError as e:
        sys.exit(f"error: {e}")


class ExpframeCallback(Callback):
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_config(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_config(config, sweep=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        log_status_counts(sweep_dir)
        if config.report.auto and sweep_dir.is_dir():
            try:
                from expframe.report import report

                log.info("report written to %s:\n%s", sweep_dir, report([sweep_dir], sweep_dir))
            except (Exception, SystemExit) as e:
                log.warning("no report for %s: %s", sweep_dir, e)
