"""The Hydra task: one job of a run or sweep. A failure is recorded, not allowed to end the sweep.

`train_job` is the job's work without Hydra (check the values, train or cross-validate, then the
steps the config asks for after training); the tests' in-process runs come through it too."""

import ctypes
import functools
import gc
import logging
import os
import sys
import time
import traceback
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from expframe.config.retrain_parent import check_retrain
from expframe.config.validate import validate
from expframe.deploy.serve import deploy
from expframe.errors import ConfigError, short_reason
from expframe.measure.signals import exit_status
from expframe.record import catalogue as figures
from expframe.record.atomic import output_failure, write_json
from expframe.record.files import CHECKPOINT_FILE, METRICS_FILE, MULTIRUN_FILE
from expframe.record.run_record import failure_record
from expframe.sweep import resume
from expframe.sweep.cv import cross_validate
from expframe.sweep.job_values import group_choices, objective, record_failure, swept_values
from expframe.sweep.summary import summarise_sweep
from expframe.train.run import AfterTraining, TrainedRun, train

log = logging.getLogger("expframe")


def serving_step(settings: DictConfig) -> AfterTraining | None:
    """`deploy.variants` measured on the finished run's network; None when the config asks for none."""
    if not settings.variants:
        return None
    return lambda net, x, y, out_dir: deploy(net, x, y, settings, out_dir)


def train_job(
    cfg: DictConfig,
    out_dir: Path,
    swept: dict | None = None,
    launcher_threads: int | None = None,
    choices: dict | None = None,
    hparam_keys: list[str] | None = None,
) -> TrainedRun:
    """The job's run (arguments as `train`'s). A value the checks before the sweep could not see (an
    Optuna trial's sample) is refused here, and the job records it as failed; the checks' time is
    the job's set-up (`job_setup_s`)."""
    started = time.perf_counter()
    validate(cfg)
    check_retrain(cfg)
    after = serving_step(cfg.deploy)
    if cfg.cv.folds:
        return cross_validate(cfg, out_dir, swept, launcher_threads, choices, hparam_keys, after)
    return train(cfg, out_dir, swept, launcher_threads, choices, hparam_keys, after=after, started=started)


def sweep_keys(hydra_cfg: DictConfig) -> list[str] | None:
    """The keys a multirun varies, for TensorBoard's HParams columns: its command line's sweeps
    (`key=a,b`, ranges), its sweeper's params (presets, Optuna's search space) and, for Optuna, the
    trial number. None for a single run, or when nothing says what varies (every typed key shows)."""
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    keys = {str(k) for k in (hydra_cfg.sweeper.get("params") or {})}
    keys.update(typed_sweep_keys(str(Path(hydra_cfg.sweep.dir) / MULTIRUN_FILE)))
    if "Optuna" in str(hydra_cfg.sweeper.get("_target_", "")):
        keys.add("trial")
    return sorted(keys) or None


@functools.cache
def typed_sweep_keys(multirun_yaml: str) -> tuple[str, ...]:
    """The keys the sweep's command line sweeps (`key=a,b`, ranges), read once per sweep: every job
    of a one-process sweep would otherwise parse the whole multirun.yaml again."""
    try:
        typed = list(OmegaConf.load(multirun_yaml).hydra.overrides.task)
    except (OSError, AttributeError):  # a sweeper that writes none (Optuna's): its params say it
        return ()
    overrides = OverridesParser.create().parse_overrides(typed)
    return tuple(o.get_key_element().lstrip("+~") for o in overrides if o.is_sweep_override())


def threads_per_job(hydra_cfg: DictConfig) -> int | None:
    """Parallel jobs share the cores: two torch processes with all-core thread pools slow each other
    down by large factors. joblib: cores / n_jobs; submitit: the CPUs given to the task
    (`hydra.launcher.cpus_per_task`); the serial basic launcher keeps torch's default (None)."""
    launcher = hydra_cfg.launcher
    if launcher.get("cpus_per_task"):
        return int(launcher.cpus_per_task)
    n_jobs = launcher.get("n_jobs")
    if n_jobs is None or "Joblib" not in str(launcher.get("_target_", "")):
        return None
    cores = os.cpu_count() or 1
    parallel = cores if n_jobs < 0 else min(n_jobs, cores)
    return max(1, cores // parallel)


def sweep_point(hydra_cfg: DictConfig) -> str | None:
    """The job's conf/ digest and overrides, hashed (expframe.sweep.resume): a resumed sweep finds
    the finished job by it without composing its point. None when conf/ changed between the plan
    and this job's composition (it is then matched by its saved config)."""
    planned = hydra_cfg.job.env_set.get(resume.DIGEST_VAR)
    if hydra_cfg.mode != RunMode.MULTIRUN or not planned:
        return None
    digest = resume.conf_digest(resume.config_dirs(hydra_cfg.runtime.config_sources))
    if digest != planned:
        log.warning("conf/ changed after the sweep planned this job: a resume will compare its config")
        return None
    return resume.point_key(digest, list(hydra_cfg.overrides.task))


def continue_in_place(cfg: DictConfig, hydra_cfg: DictConfig) -> None:
    """A sweep job launched into a folder that holds a checkpoint is one a resumed sweep continues
    (new points get new folders): it continues exactly, as `resume=` does for a run."""
    folder = Path(hydra_cfg.runtime.output_dir)
    if hydra_cfg.mode == RunMode.MULTIRUN and not cfg.get("resume") and (folder / CHECKPOINT_FILE).is_file():
        log.info("continuing the job from %s", folder / CHECKPOINT_FILE)
        with open_dict(cfg):
            cfg.resume = str(folder)


def run(cfg: DictConfig) -> float | list[float]:
    hydra_cfg = HydraConfig.get()
    continue_in_place(cfg, hydra_cfg)
    out_dir = Path(cfg.resume) if cfg.get("resume") else Path(hydra_cfg.runtime.output_dir)
    swept = swept_values(cfg, list(hydra_cfg.overrides.task))
    choices = group_choices(hydra_cfg)
    threads = torch.get_num_threads()
    try:
        metrics = train_job(cfg, out_dir, swept, threads_per_job(hydra_cfg), choices, sweep_keys(hydra_cfg)).metrics
    except KeyboardInterrupt as e:
        metrics = record_failure(
            out_dir, failure_record(e, cfg.seed, cfg.precision.name, swept, choices, status="interrupted")
        )
    except Exception as e:
        metrics = record_failure(out_dir, failure_record(e, cfg.seed, cfg.precision.name, swept, choices))
        if hydra_cfg.mode == RunMode.RUN:
            if isinstance(e, ConfigError):  # found only once the data are loaded: still a user error
                sys.exit(f"error: {e}")
            if output_failure(e):
                sys.exit(f"error: {output_failure(e, out_dir)}")
            if out_of_memory(e):
                sys.exit(f"error: out of memory ({short_reason(e, 160)}): try a smaller model, batch_size or data set")
            raise
        log.error("job failed, the sweep goes on:\n%s", traceback.format_exc())
        return objective(metrics, cfg.objective)
    finally:
        cleaning = time.perf_counter()
        if hydra_cfg.mode == RunMode.MULTIRUN:  # a single run's process ends here: nothing to hand on
            release_job_state(threads)
        cleaned = time.perf_counter() - cleaning
    if metrics.get("time_breakdown"):
        metrics["time_breakdown"]["clean_up_s"] = cleaned
        metrics["sweep_point"] = sweep_point(hydra_cfg)
        write_json(out_dir / METRICS_FILE, metrics)
    if metrics["status"] == "interrupted":
        stop_interrupted(metrics, out_dir, hydra_cfg, cfg.report.auto, exit_status())
    log.info("%s -> %s", figures.summary_line(metrics), out_dir)
    return objective(metrics, cfg.objective)


def out_of_memory(error: BaseException) -> bool:
    """The allocators' refusals: Python's, torch's CPU allocator (a RuntimeError) and CUDA's."""
    text = str(error)
    return isinstance(error, MemoryError | torch.OutOfMemoryError) or "can't allocate memory" in text


def stop_interrupted(metrics: dict, out_dir: Path, hydra_cfg: DictConfig, auto_report: bool, status: int) -> None:
    """Ctrl-C or SIGTERM: the job's finished epochs are in its metrics.json; a sweep starts no further
    job and writes the report of what finished. Exit status 130 (Ctrl-C) or 143 (SIGTERM), the shell's."""
    log.warning(
        "%s: %s finished epochs recorded (status interrupted) -> %s",
        "terminated (SIGTERM)" if status == 143 else "interrupted",
        metrics["epochs_run"] or 0,
        out_dir,
    )
    if hydra_cfg.mode == RunMode.MULTIRUN:
        summarise_sweep(Path(hydra_cfg.sweep.dir), auto_report)
    raise SystemExit(status)


def release_job_state(threads: int) -> None:
    """Jobs of one process (basic launcher, joblib workers) must not inherit each other's memory or
    thread count: a job's `device.threads` ends with it.

    A full collection walks every object of torch, dynamo and torchmetrics (~0.25 s); freezing the
    survivors afterwards leaves the next job's collection only its own objects to walk. glibc keeps
    freed heap pages resident; trimming them keeps a big job's memory out of the next job's peak RSS.
    """
    torch.set_num_threads(threads)
    gc.collect()
    gc.freeze()
    trim_heap()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def trim_heap() -> None:
    """glibc only (Linux); elsewhere the allocator keeps its own policy."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        return
