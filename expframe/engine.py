"""The training run: `train(cfg, out_dir) -> metrics`, pure of Hydra's global state.

Data sit on the device and are batched by index; the hot loop never reads a value back to the host
(loss and predictions accumulate on the device and are read once per epoch), so the clock measures
the model, not the bookkeeping.
"""

import hashlib
import logging
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn
from tqdm import tqdm

from expframe.build import build
from expframe.data import DeviceData, load, split_indices
from expframe.errors import ConfigError
from expframe.measure import PeakMemory, environment, process_age_s
from expframe.outputs import write_json
from expframe.record import Recorder
from expframe.runtime import autocast, seed_everything, synchronize
from expframe.steps import GraphedStep, Step, eager_step
from expframe.validate import validate

log = logging.getLogger(__name__)

EVAL_BATCH = 2048


def accuracy(preds: torch.Tensor, targets: torch.Tensor, num_classes: int) -> float:
    from torchmetrics.functional.classification import multiclass_accuracy

    return multiclass_accuracy(preds, targets, num_classes, average="micro", validate_args=False).item()


def build_model(cfg: DictConfig, data: DeviceData) -> nn.Module:
    model = build(
        cfg.model, input_shape=data.input_shape, num_classes=data.num_classes, activation=build(cfg.activation)
    )
    weight_init, bias_init = build(cfg.init.weight), build(cfg.init.bias)
    for module in model.modules():
        if isinstance(module, nn.Linear | nn.Conv2d):
            if weight_init is not None:
                weight_init(module.weight)
            if bias_init is not None:
                bias_init(module.bias)
    return model


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host tensors go to a GPU from pinned memory without blocking the host."""
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def weights_hash(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def train_epoch(
    model: nn.Module, step: Step, data: DeviceData, order: torch.Tensor, batch_size: int, bar
) -> tuple[torch.Tensor, torch.Tensor]:
    """One pass in a seeded order; a final batch of one sample is dropped (BatchNorm cannot train on it).

    Per step it only keeps the batch's logits: the epoch's training loss and accuracy are computed
    from them once the clock has stopped (the mean of per-batch mean losses, weighted by batch size,
    is the cross-entropy over all the logits). Returns device tensors (logits, targets).
    """
    model.train()
    n = len(order) - (len(order) % batch_size == 1)
    logits = torch.empty(n, data.num_classes, device=order.device)
    for start in range(0, n, batch_size):
        batch = order[start : start + batch_size]
        logits[start : start + len(batch)] = step(batch).detach()
        bar.update()
    return logits, data.train_y[order[:n]]


def build_optimizer(cfg: DictConfig, model: nn.Module) -> torch.optim.Optimizer:
    """A CUDA graph needs optimizer state on the device (`capturable`); SGD has no such flag and needs none."""
    factory, params = build(cfg.optimizer), list(model.parameters())
    if cfg.cuda_graphs:
        try:
            return factory(params, capturable=True)
        except TypeError:
            pass
    return factory(params)


@torch.inference_mode()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int, amp) -> tuple[float, float]:
    model.eval()
    loss_sum = torch.zeros((), device=x.device)
    preds = []
    for start in range(0, len(x), EVAL_BATCH):
        with amp:
            logits = model(x[start : start + EVAL_BATCH])
        loss_sum += F.cross_entropy(logits.float(), y[start : start + EVAL_BATCH], reduction="sum")
        preds.append(logits.argmax(1))
    return loss_sum.item() / len(x), accuracy(torch.cat(preds), y, num_classes)


def train(cfg: DictConfig, out_dir: Path, swept: dict | None = None) -> dict:
    """Writes metrics.json, history.csv and TensorBoard events into out_dir and returns the metrics.

    `swept`: the keys this run's sweep varies, recorded for the report and TensorBoard's HParams.
    """
    device = validate(cfg)
    if cfg.device.threads:
        torch.set_num_threads(cfg.device.threads)
    data = load(cfg.dataset, device)
    out_dir.mkdir(parents=True, exist_ok=True)
    train_idx, val_idx = (i.to(device) for i in split_indices(len(data.train_y), cfg.dataset.val_fraction, cfg.seed))
    if len(train_idx) < 2:
        raise ConfigError(
            "dataset.val_fraction",
            cfg.dataset.val_fraction,
            f"leaves {len(train_idx)} of {len(data.train_y)} training samples to train on; use a smaller fraction",
        )
    val_x, val_y = data.train_x[val_idx], data.train_y[val_idx]
    memory = PeakMemory(device)
    memory.reset()
    seed_everything(cfg.seed)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    net = build_model(cfg, data).to(device, memory_format=memory_format)
    init_hash = weights_hash(net)
    model = torch.compile(net) if cfg.compile else net
    optimizer = build_optimizer(cfg, model)
    scheduler = build(cfg.scheduler)(optimizer) if cfg.scheduler.get("_target_") else None
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision.grad_scaler)
    amp = autocast(cfg.precision, device)
    step = eager_step(model, optimizer, scaler, data, amp, memory_format)
    if cfg.cuda_graphs:
        step = GraphedStep(step, optimizer, cfg.batch_size, device)
    batch_order = torch.Generator().manual_seed(cfg.seed)
    steps = math.ceil(len(train_idx) / cfg.batch_size)
    history: list[dict] = []
    status, test_acc, eval_time = "ok", None, 0.0
    with Recorder(cfg, out_dir, net, val_x[:2], swept or {}) as recorder:
        startup = process_age_s()
        for epoch in range(1, cfg.epochs + 1):
            order = train_idx[to_device(torch.randperm(len(train_idx), generator=batch_order), device)]
            lr = optimizer.param_groups[0]["lr"]
            with tqdm(
                total=steps, desc=f"epoch {epoch}/{cfg.epochs}", leave=False, disable=not sys.stdout.isatty()
            ) as bar:
                synchronize(device)
                start = time.perf_counter()
                logits, targets = train_epoch(model, step, data, order, cfg.batch_size, bar)
                synchronize(device)
                epoch_time = time.perf_counter() - start
            train_loss = F.cross_entropy(logits, targets).item()
            train_acc = accuracy(logits.argmax(1), targets, data.num_classes)
            if not math.isfinite(train_loss):
                status = "diverged"
                log.warning("epoch %d: training loss is %s; stopping (status diverged)", epoch, train_loss)
                break
            start = time.perf_counter()
            val_loss, val_acc = evaluate(model, val_x, val_y, data.num_classes, amp)
            eval_time += time.perf_counter() - start
            if scheduler is not None:
                scheduler.step()
            history.append(
                {
                    "epoch": epoch,
                    "train_loss": train_loss,
                    "train_acc": train_acc,
                    "val_loss": val_loss,
                    "val_acc": val_acc,
                    "lr": lr,
                    "epoch_time_s": epoch_time,
                    "samples_per_s": len(order) / epoch_time,
                }
            )
            recorder.epoch(history, net, memory)
        if status == "ok":
            start = time.perf_counter()
            test_acc = evaluate(model, data.test_x, data.test_y, data.num_classes, amp)[1]
            eval_time += time.perf_counter() - start
        metrics = summarise(history, status, test_acc, len(train_idx))
        metrics.update(
            eval_time_s=eval_time,
            logging_time_s=recorder.elapsed,
            startup_s=startup,
            **memory.read(),
            n_params=sum(p.numel() for p in net.parameters()),
            init_hash=init_hash,
            seed=cfg.seed,
            device=str(device),
            precision=cfg.precision.name,
            swept=swept or {},
            env=environment(device),
        )
        recorder.finish(metrics)
    write_json(out_dir / "metrics.json", metrics)
    return metrics


def summarise(history: list[dict], status: str, test_acc: float | None, n_train: int) -> dict:
    """Epoch time and throughput leave out the first (warm-up) epoch whenever there is a later one."""
    last = history[-1] if history else {}
    times = [row["epoch_time_s"] for row in history]
    steady = times[1:] or times
    return {
        "status": status,
        "error": None,
        "val_acc": last.get("val_acc"),
        "test_acc": test_acc,
        "best_val_acc": max((row["val_acc"] for row in history), default=None),
        "final_train_loss": last.get("train_loss"),
        "final_val_loss": last.get("val_loss"),
        "epochs_run": len(history),
        "epoch_time_s": sum(steady) / len(steady) if steady else None,
        "first_epoch_time_s": times[0] if times else None,
        "train_time_s": sum(times),
        "samples_per_s": n_train * len(steady) / sum(steady) if steady else None,
    }
