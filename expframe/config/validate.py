"""Value checks that a YAML schema cannot express, run before any data is touched or file written.

Hydra already rejects unknown options and keys; `+key=value` bypasses that, so the values that
matter are checked here again, with their types.
"""

import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from expframe.config.dry_build import dry_build, machine_memory_bytes
from expframe.deploy.serve import check_settings as check_deploy
from expframe.errors import ConfigError
from expframe.measure.energy import check_settings
from expframe.measure.shift import check_settings as check_shift
from expframe.record import catalogue as figures
from expframe.train.augment import check_settings as check_augment
from expframe.train.losses import check_class_weights
from expframe.train.runtime import check_precision, resolve_device

FLOAT32_MAX = float(torch.finfo(torch.float32).max)


@dataclass(frozen=True)
class Rule:
    key: str
    kind: type
    ok: Callable[[float], bool]
    allowed: str
    # absent or null is fine: keys that only some models have, or that a sweeper sets
    optional: bool = False


RULES = (
    Rule("epochs", int, lambda v: v >= 1, "an integer >= 1"),
    Rule("batch_size", int, lambda v: v >= 1, "an integer >= 1"),
    Rule("seed", int, lambda v: 0 <= v <= 2**63 - 1, "an integer in [0, 2**63 - 1]"),
    Rule("model.depth", int, lambda v: v >= 0, "an integer >= 0 (hidden layers)", optional=True),
    Rule("model.width", int, lambda v: v >= 1, "an integer >= 1", optional=True),
    Rule("model.dropout", float, lambda v: 0 <= v < 1, "a number in [0, 1)", optional=True),
    Rule("model.batchnorm", bool, lambda v: True, "true or false", optional=True),
    Rule(
        "optimizer.lr",
        float,
        lambda v: 0 < v <= FLOAT32_MAX,
        "a finite number > 0 and <= 3.4e38 (float32's largest: the weights' precision)",
    ),
    Rule("optimizer.momentum", float, lambda v: 0 <= v < 1, "a number in [0, 1)", optional=True),
    Rule("optimizer.weight_decay", float, lambda v: 0 <= v < math.inf, "a finite number >= 0", optional=True),
    Rule("optimizer.eps", float, lambda v: 0 < v < math.inf, "a finite number > 0", optional=True),
    Rule(
        "scheduler.gamma",
        float,
        lambda v: 0 < v <= 1,
        "a number in (0, 1] (the factor the lr is multiplied by)",
        optional=True,
    ),
    Rule("scheduler.step_size", int, lambda v: v >= 1, "an integer >= 1 (epochs between lr drops)", optional=True),
    Rule("scheduler.T_max", int, lambda v: v >= 1, "an integer >= 1 (epochs)", optional=True),
    Rule("scheduler.eta_min", float, lambda v: 0 <= v < math.inf, "a finite number >= 0", optional=True),
    Rule("dataset.val_fraction", float, lambda v: 0 < v < 1, "a number in (0, 1)"),
    Rule("dataset.num_classes", int, lambda v: v >= 2, "an integer >= 2"),
    Rule("logging.histogram_every", int, lambda v: v >= 0, "an integer >= 0 (0 = off)", optional=True),
    Rule("trial", int, lambda v: v >= 0, "an integer >= 0 (the Optuna trial number)", optional=True),
    Rule("compile", bool, lambda v: True, "true or false"),
    Rule("channels_last", bool, lambda v: True, "true or false"),
    Rule("cuda_graphs", bool, lambda v: True, "true or false"),
    Rule(
        "device.threads",
        int,
        lambda v: v >= 1,
        "an integer >= 1 (torch threads; null = decided per launcher)",
        optional=True,
    ),
    Rule("loss.label_smoothing", float, lambda v: 0 <= v < 1, "a number in [0, 1)", optional=True),
    Rule("checkpoint.save_model", bool, lambda v: True, "true or false"),
    Rule("checkpoint.every", int, lambda v: v >= 0, "an integer >= 0 (epochs between checkpoints; 0 = off)"),
    Rule("early_stopping.patience", int, lambda v: v >= 1, "an integer >= 1 (epochs), or null for off", optional=True),
    Rule("early_stopping.min_delta", float, lambda v: 0 <= v < math.inf, "a finite number >= 0"),
    Rule("early_stopping.restore_best", bool, lambda v: True, "true or false"),
    Rule("precision.grad_scaler", bool, lambda v: True, "true or false"),
    Rule("logging.tensorboard", bool, lambda v: True, "true or false"),
    Rule("logging.graph", bool, lambda v: True, "true or false"),
    Rule("cv.folds", int, lambda v: v >= 2, "an integer >= 2 (folds), or null for off", optional=True),
    Rule("energy.track", bool, lambda v: True, "true or false"),
    Rule("report.auto", bool, lambda v: True, "true or false"),
    # optional: run folders written before the key existed are checked by expframe-eval too
    Rule("sweep.rerun_changed", bool, lambda v: True, "true or false", optional=True),
    Rule("dataset.source.test_size", int, lambda v: v >= 1, "an integer >= 1", optional=True),
    Rule("dataset.source.repeat", int, lambda v: v >= 1, "an integer >= 1", optional=True),
    Rule("dataset.source.n_train", int, lambda v: v >= 2, "an integer >= 2", optional=True),
    Rule(
        "dataset.resident_max_mb", float, lambda v: v >= 0, "a number of MB >= 0 (null: always resident)", optional=True
    ),
    Rule(
        "dataset.workers", int, lambda v: v >= 0, "an integer >= 0 (DataLoader workers when streaming)", optional=True
    ),
    Rule("dataset.strict", bool, lambda v: True, "true or false", optional=True),
    Rule("dataset.max_pixels", int, lambda v: v >= 1, "an integer >= 1 (pixels an image may declare)", optional=True),
    Rule("model.freeze_backbone", bool, lambda v: True, "true or false", optional=True),
    Rule("dataset.source.n_test", int, lambda v: v >= 1, "an integer >= 1", optional=True),
)


def check_shape(cfg: DictConfig) -> None:
    shape = OmegaConf.select(cfg, "dataset.input_shape")
    dims = list(shape) if isinstance(shape, ListConfig) else None
    if not dims or not all(_typed(d, int) and d >= 1 for d in dims):
        raise ConfigError("dataset.input_shape", shape, "must be a list of integers >= 1 (one sample's shape)")


def _typed(value: object, kind: type) -> bool:
    if isinstance(value, bool):
        return kind is bool
    if kind is float:
        return isinstance(value, int | float)
    return isinstance(value, kind)


def check_values(cfg: DictConfig) -> None:
    """The rules (~1.6 ms), then a dry build of every configured object, which expframe.config.dry_build
    runs once per process for each distinct set of what it reads (a sweep's jobs were built before
    the first one started)."""
    check_rules(cfg)
    check_shape(cfg)
    dry_build(cfg)


def check_rules(cfg: DictConfig) -> None:
    for rule in RULES:
        value = OmegaConf.select(cfg, rule.key, default=None)
        if value is None and rule.optional:
            continue
        if not _typed(value, rule.kind) or not rule.ok(value):
            raise ConfigError(rule.key, value, f"must be {rule.allowed}")
    if OmegaConf.select(cfg, "model.batchnorm", default=False) and cfg.batch_size < 2:
        raise ConfigError(
            "batch_size", cfg.batch_size, "must be >= 2 with model.batchnorm=true (BatchNorm needs 2 samples)"
        )
    pruner = cfg.cv.get("pruner")
    if pruner is not None and not (
        isinstance(pruner, DictConfig) and str(pruner.get("_target_", "")).startswith("optuna.pruners.")
    ):
        raise ConfigError(
            "cv.pruner", pruner, "must be null or an Optuna pruner ({_target_: optuna.pruners.MedianPruner})"
        )
    if cfg.cv.folds and cfg.get("resume"):
        raise ConfigError("resume", cfg.resume, "cannot continue a cross-validated job (cv.folds is set)")
    monitored = [f.name for f in figures.per_epoch() if f.higher_is_better is not None]
    if cfg.early_stopping.monitor not in monitored:
        raise ConfigError(
            "early_stopping.monitor", cfg.early_stopping.monitor, f"must be one of {', '.join(monitored)}"
        )
    objectives = cfg.objective if isinstance(cfg.objective, ListConfig) else [cfg.objective]
    if not objectives:
        raise ConfigError("objective", [], f"must name at least one figure (one of {', '.join(figures.objectives())})")
    allowed = figures.objectives()
    for name in objectives:
        if name not in allowed:
            raise ConfigError("objective", name, f"must be one of {', '.join(allowed)}")


def check_cuda_graphs(cfg: DictConfig, device: torch.device) -> None:
    """A captured step bakes in its learning rate and cannot host GradScaler's host-side checks."""
    if not cfg.cuda_graphs:
        return
    if device.type != "cuda":
        raise ConfigError("cuda_graphs", True, f"needs device=cuda (this run is on {device.type})")
    if cfg.precision.grad_scaler:
        raise ConfigError(
            "cuda_graphs", True, f"cannot capture GradScaler (precision={cfg.precision.name}); use fp32 or bf16"
        )
    if cfg.scheduler.get("_target_"):
        raise ConfigError("cuda_graphs", True, "needs a constant learning rate (scheduler=none)")
    if cfg.compile:
        raise ConfigError("cuda_graphs", True, "and compile=true exclude each other")
    if cfg.augment.name != "none":
        raise ConfigError(
            "cuda_graphs", True, f"cannot capture augment={cfg.augment.name}'s random draws; use augment=none"
        )


def usable_cpus() -> int:
    """The CPUs this process may run on (a container's or `taskset`'s share, not the machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def check_threads(threads: int | None) -> None:
    """More torch threads than CPUs make every thread wait for a core: epochs up to 160x slower."""
    cpus = usable_cpus()
    if threads is not None and threads > cpus:
        raise ConfigError("device.threads", threads, f"must be <= {cpus}, the CPUs this process may use")


def check_data_size(dataset: DictConfig) -> None:
    """A synthetic set is generated whole, as float32: it must fit in the machine's memory."""
    source = dataset.get("source") or {}
    if not str(source.get("_target_", "")).endswith(".synthetic"):
        return
    samples = (source.get("n_train") or 0) + (source.get("n_test") or 0)
    need = samples * math.prod(source.get("shape") or [1]) * 4
    memory = machine_memory_bytes()
    if need > memory:
        raise ConfigError(
            "dataset.source.n_train",
            source.get("n_train"),
            f"makes {samples:,} samples of {list(source.get('shape'))} float32: {need / 2**30:,.1f} GiB, "
            f"over this machine's {memory / 2**30:,.1f} GiB of memory",
        )


def validate(cfg: DictConfig) -> torch.device:
    """Returns the device the run will use, so the check and the run agree."""
    check_values(cfg)
    check_settings(cfg.energy)
    check_deploy(cfg.deploy)
    check_augment(cfg.augment, cfg.loss, list(cfg.dataset.input_shape), cfg.dataset.name)
    check_shift(cfg.get("shift"), cfg.dataset.get("input_shape"), str(cfg.dataset.source.get("_target_", "")))
    check_class_weights(cfg.loss)
    check_threads(cfg.device.get("threads"))
    check_data_size(cfg.dataset)
    device = resolve_device(cfg.device)
    check_precision(cfg.precision, device)
    check_cuda_graphs(cfg, device)
    return device
