"""The end of a sweep: one line per job status, then the report (the report worker's, or this
process's when no worker runs). A resumed or grown sweep sums up the points its command names."""

import csv
import json
import logging
from collections import Counter
from pathlib import Path

from expframe.record.files import HYDRA_DIR, METRICS_FILE
from expframe.sweep import resume
from expframe.sweep.report_worker import Worker

log = logging.getLogger("expframe")
SUMMARY_CSV = "summary.csv"


def status_counts(jobs: list[Path]) -> Counter:
    counts: Counter = Counter()
    for job in jobs:
        try:
            counts[json.loads((job / METRICS_FILE).read_text())["status"]] += 1
        except (OSError, ValueError, KeyError, TypeError):
            counts["incomplete"] += 1
    return counts


def sweep_jobs(sweep_dir: Path) -> tuple[list[Path], resume.Plan | None]:
    """The job folders to sum up: the points of this process's plan when it planned this sweep
    folder (a grid), else every job folder there (an Optuna study's)."""
    plan = resume.ACTIVE
    if plan is not None and plan.sweep_dir.absolute() == sweep_dir.absolute():
        return [p for p in plan.folders() if (p / HYDRA_DIR).is_dir()], plan
    if not sweep_dir.is_dir():
        return [], None
    return sorted(p for p in sweep_dir.iterdir() if (p / HYDRA_DIR).is_dir()), None


def log_status_counts(jobs: list[Path]) -> None:
    for status, n in sorted(status_counts(jobs).items()):
        log.info("%s: %d job%s", status, n, "" if n == 1 else "s")


def report_stands(sweep_dir: Path, jobs: list[Path]) -> bool:
    """Whether the sweep folder's report already covers exactly these jobs (a resume that ran
    nothing need not write it again: a 100-job report takes seconds)."""
    try:
        with open(sweep_dir / SUMMARY_CSV, newline="") as f:
            reported = {Path(row["run_dir"]).absolute() for row in csv.DictReader(f)}
    except (OSError, KeyError, csv.Error, TypeError):
        return False
    return reported == {j.absolute() for j in jobs}


def summarise_sweep(sweep_dir: Path, auto_report: bool) -> None:
    """One line per status, then the report: at the end of a sweep, or when Ctrl-C stops it."""
    jobs, plan = sweep_jobs(sweep_dir)
    log_status_counts(jobs)
    if not jobs:
        Worker.cancel()
        return
    if not auto_report:
        Worker.stop()
        return
    if plan is not None and not plan.to_run() and report_stands(sweep_dir, jobs):
        Worker.cancel()
        log.info("nothing was run: the report in %s stands", sweep_dir)
        return
    paths = jobs if plan is not None and plan.outside else [sweep_dir]
    try:
        markdown = Worker.report(paths, sweep_dir)
        if markdown is None:
            # deferred for start-up time: the callbacks that import this module load before every
            # run, and the report's modules bring numpy (0.2 s) that a refused command never needs
            from expframe.report.summary import report

            markdown = report(paths, sweep_dir)
        log.info("report written to %s:\n%s", sweep_dir, markdown)
        if paths != [sweep_dir]:
            log.info(
                "the report covers the %d points of this command; the folder holds %d other job folder(s): "
                "expframe-report %s covers them all",
                len(jobs),
                plan.outside,
                sweep_dir,
            )
    except (Exception, SystemExit) as e:
        log.warning("no report for %s: %s", sweep_dir, e)
