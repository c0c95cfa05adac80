"""k-fold cross-validation: one job trains k models, one per stratified fold of the training set.

The folds depend on the labels and the seed only, so every job and trial of a sweep with one seed
sees the same folds; each fold's model starts from the same initial weights (same `init_hash`),
and trains on the resident data by index. Each fold is a run of its own in `fold_<i>/`
(history.csv, TensorBoard, metrics.json, model.pt); the job's metrics.json holds the fold means
under the usual keys, with `<key>_std` and `<key>_folds`, so sweepers and the report read a CV
job like any other.
"""

import logging
import statistics
from pathlib import Path

import torch
from omegaconf import DictConfig

from expframe.config.validate import validate
from expframe.data.device_data import load
from expframe.errors import ConfigError
from expframe.record import catalogue as figures
from expframe.record.atomic import write_json
from expframe.record.files import FOLD_PREFIX, METRICS_FILE
from expframe.record.recorder import write_hparams
from expframe.sweep.optuna_sweeper import report_fold
from expframe.train.run import AfterTraining, TrainedRun, train

log = logging.getLogger("expframe")


def fold_indices(labels: torch.Tensor, k: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(train, validation) index tensors per fold: stratified, disjoint validation folds that
    cover the training set once, shuffled by `seed`."""
    from sklearn.model_selection import StratifiedKFold

    y = labels.cpu().numpy()
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed % 2**32)
    return [(torch.from_numpy(tr), torch.from_numpy(va)) for tr, va in splitter.split(y.reshape(-1, 1), y)]


def check_folds(k: int, labels: torch.Tensor) -> None:
    """Every class must reach every fold: k at most the smallest class count."""
    counts = torch.bincount(labels.cpu())
    present = counts[counts > 0]
    smallest = int(present.min())
    if k > smallest:
        rarest = int((counts == smallest).nonzero()[0])
        raise ConfigError(
            "cv.folds",
            k,
            f"is above the smallest class count ({smallest} samples of class {rarest} in the training set); "
            f"use at most {smallest}",
        )
    if len(labels) // k < 2:
        raise ConfigError("cv.folds", k, f"leaves fewer than 2 samples per fold of the {len(labels)} training samples")


def aggregate(fold_metrics: list[dict], k: int) -> dict:
    """The job's metrics.json: fold means under the usual keys, `<key>_std` (sample standard
    deviation over folds) and `<key>_folds`; the rest (seed, init_hash, ...) from the first fold.
    Time buckets add up over the folds: the job spent all of them."""
    first = fold_metrics[0]
    failed = next((m for m in fold_metrics if m["status"] != "ok"), None)
    out = {**first, "status": failed["status"] if failed else "ok", "error": failed and failed["error"]}
    for name in figures.names(figures.in_summary()):
        values = [m.get(name) for m in fold_metrics]
        known = [v for v in values if v is not None]
        out[f"{name}_folds"] = values
        if failed or len(values) < k or len(known) < len(values):
            out[name], out[f"{name}_std"] = None, None
            continue
        out[name] = statistics.fmean(known)
        out[f"{name}_std"] = statistics.stdev(known) if len(known) > 1 else 0.0
    buckets = [m.get("time_breakdown") or {} for m in fold_metrics]
    out["time_breakdown"] = {
        key: sum(b.get(key) or 0.0 for b in buckets) for key in dict.fromkeys(k for b in buckets for k in b)
    }
    # a flag of the job is raised when any fold's was; the load, the highest any fold saw
    for flag in figures.FLAGS:
        out[flag] = any(bool(m.get(flag)) for m in fold_metrics)
    loads = [m["other_cpu_load"] for m in fold_metrics if isinstance(m.get("other_cpu_load"), int | float)]
    out["other_cpu_load"] = max(loads) if loads else None
    out["cv_folds"] = k
    out["fold_dirs"] = [f"{FOLD_PREFIX}{i}" for i in range(k)]
    return out


def write_cv_events(out_dir: Path, fold_metrics: list[dict], aggregated: dict, logging_cfg: DictConfig) -> None:
    """The job's own TensorBoard run: `cv/<figure>` per fold (step = fold number) and their mean,
    as the practical asks, plus the HParams row with the fold means."""
    if not logging_cfg.tensorboard:
        return
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(log_dir=str(out_dir)) as writer:
        for name in ("val_acc", "val_loss", "test_acc"):
            values = [m.get(name) for m in fold_metrics]
            for i, value in enumerate(values, 1):
                if value is not None:
                    writer.add_scalar(f"cv/{name}", value, i)
            if aggregated.get(name) is not None:
                writer.add_scalar(f"cv/{name}_mean", aggregated[name], len(values))
        write_hparams(writer, aggregated, aggregated.get("swept") or {})


def pruned_after(cfg: DictConfig, fold_metrics: list[dict]) -> bool:
    """Report the objective's running mean over the folds so far to this job's Optuna trial."""
    if cfg.get("trial") is None or not isinstance(cfg.objective, str):
        return False
    values = [m.get(cfg.objective) for m in fold_metrics]
    if any(v is None for v in values):
        return False
    return report_fold(cfg.trial, statistics.fmean(values), len(values))


def cross_validate(
    cfg: DictConfig,
    out_dir: Path,
    swept: dict | None = None,
    launcher_threads: int | None = None,
    choices: dict | None = None,
    hparam_keys: list[str] | None = None,
    after: AfterTraining | None = None,
) -> TrainedRun:
    """`train` once per fold into `fold_<i>/`, then the job's metrics.json and TensorBoard run. A fold
    that does not finish (diverged, failed, interrupted) ends the job with its status. `after`: each
    finished fold's step after training (train's)."""
    k = cfg.cv.folds
    labels = load(cfg.dataset, validate(cfg)).train_y
    check_folds(k, labels)
    fold_metrics, trained = [], None
    for i, split in enumerate(fold_indices(labels, k, cfg.seed)):
        trained = train(
            cfg, out_dir / f"{FOLD_PREFIX}{i}", swept, launcher_threads, choices, hparam_keys, split=split, after=after
        )
        fold_metrics.append(trained.metrics)
        if trained.metrics["status"] != "ok":
            break
        if pruned_after(cfg, fold_metrics):
            log.info("trial %s pruned after fold %d of %d", cfg.trial, i + 1, k)
            break
    aggregated = aggregate(fold_metrics, k)
    if len(fold_metrics) < k and aggregated["status"] == "ok":
        aggregated["status"] = "pruned"
    out_dir.mkdir(parents=True, exist_ok=True)
    write_cv_events(out_dir, fold_metrics, aggregated, cfg.logging)
    write_json(out_dir / METRICS_FILE, aggregated)
    return TrainedRun(aggregated, trained.model, cfg, out_dir)
