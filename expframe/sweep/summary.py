"""The end of a sweep: one line per job status, then the report (the report worker's, or this
process's when no worker runs)."""

import json
import logging
from collections import Counter
from pathlib import Path

from expframe.record.files import HYDRA_DIR, METRICS_FILE
from expframe.sweep.report_worker import Worker

log = logging.getLogger("expframe")


def status_counts(sweep_dir: Path) -> Counter:
    counts: Counter = Counter()
    for job in sorted(p for p in sweep_dir.iterdir() if (p / HYDRA_DIR).is_dir()):
        try:
            counts[json.loads((job / METRICS_FILE).read_text())["status"]] += 1
        except (OSError, ValueError, KeyError):
            counts["incomplete"] += 1
    return counts


def log_status_counts(sweep_dir: Path) -> None:
    if not sweep_dir.is_dir():
        return
    for status, n in sorted(status_counts(sweep_dir).items()):
        log.info("%s: %d job%s", status, n, "" if n == 1 else "s")


def summarise_sweep(sweep_dir: Path, auto_report: bool) -> None:
    """One line per status, then the report: at the end of a sweep, or when Ctrl-C stops it."""
    log_status_counts(sweep_dir)
    has_jobs = sweep_dir.is_dir() and any((p / HYDRA_DIR).is_dir() for p in sweep_dir.iterdir())
    if not has_jobs:
        Worker.cancel()
        return
    if not auto_report:
        Worker.stop()
        return
    try:
        markdown = Worker.report(sweep_dir)
        if markdown is None:
            # deferred for start-up time: the callbacks that import this module load before every
            # run, and the report's modules bring numpy (0.2 s) that a refused command never needs
            from expframe.report.summary import report

            markdown = report([sweep_dir], sweep_dir)
        log.info("report written to %s:\n%s", sweep_dir, markdown)
    except (Exception, SystemExit) as e:
        log.warning("no report for %s: %s", sweep_dir, e)
