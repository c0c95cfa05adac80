"""The epoch loop: `fit` runs epochs, `one_epoch` trains (the clock around the steps only) then scores,
`train_epoch` is the hot loop. Data sit on the device and are batched by index; the hot loop never
reads a value back to the host (each step keeps only its logits, read once per epoch after the clock
stops), so the clock measures the model, not the bookkeeping."""

import logging
import math
import sys
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import nn
from tqdm import tqdm

from expframe.data.device_data import DeviceData
from expframe.measure.clocks import CpuWindow, StepClock, Window, clean_median_ms, share, step_stats
from expframe.measure.energy import EnergyMeter
from expframe.measure.memory import ActivationProbe, PeakMemory, model_state_bytes
from expframe.measure.scoring import accuracy, evaluate, task_figures
from expframe.record import catalogue as figures
from expframe.record.files import CHECKPOINT_FILE
from expframe.record.recorder import Recorder
from expframe.train import checkpoint
from expframe.train.augment import Augment
from expframe.train.early_stopping import EarlyStopping
from expframe.train.retrain import Retraining
from expframe.train.runtime import synchronize
from expframe.train.steps import Step

log = logging.getLogger(__name__)


@dataclass
class Run:
    """Everything a run trains with, built once by `setup`: built objects and the few settings the
    loop reads (not the config, so the loop's reach into the settings is this list)."""

    device: torch.device
    data: DeviceData
    train_idx: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    net: nn.Module
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    loss_fn: nn.Module
    amp: AbstractContextManager
    step: Step
    memory: PeakMemory
    init_hash: str
    clock: StepClock
    threads: int
    scaler: torch.amp.GradScaler
    batch_order: torch.Generator
    out_dir: Path
    batch_size: int
    epochs: int
    compiled: bool
    checkpoint_every: int
    early_stopping: DictConfig
    config: dict | None  # the resolved config each checkpoint saves for resume to compare; None: no checkpoints
    augment: Augment | None = None
    # the steps train on a mix's soft targets (augment=mixup|cutmix), not the labels
    soft_targets: bool = False
    class_weights: list[float] | None = None
    # a retraining run's parent weights and the gate's held-out data (retrain.from); None otherwise
    retraining: Retraining | None = None


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host tensors go to a GPU from pinned memory without blocking the host."""
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


@dataclass
class Fitted:
    """What the epoch loop leaves: the history and status, the steps and CPU windows of the steady
    epochs (the first one apart unless it is the only one), and the measured memory of training."""

    history: list[dict] = field(default_factory=list)
    status: str = "ok"
    eval_time_s: float = 0.0
    steady_step_ms: list[float] = field(default_factory=list)
    steady_clean: list[bool] = field(default_factory=list)
    steady_windows: list[Window] = field(default_factory=list)
    samples_per_epoch: int = 0
    first_step_at: float | None = None
    logging_before_s: float = 0.0
    stopper: EarlyStopping | None = None
    model_state_bytes: int | None = None
    activation_bytes: int | None = None
    val_confusion: list | None = None


def train_epoch(
    run: Run, order: torch.Tensor, bar: tqdm, probe: ActivationProbe | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One pass in a seeded order; a final batch of one sample is dropped (BatchNorm cannot train on it).

    Returns the epoch's logits and targets (device tensors): its training loss and accuracy are
    computed from them once the clock has stopped. The targets are what each step trained on: the
    labels, or a mix's soft targets (N, classes). The step clock marks every step boundary; `probe`
    watches what the first step saves for backward.
    """
    run.model.train()
    batch_size = run.batch_size
    n = len(order) - (len(order) % batch_size == 1)
    logits = torch.empty(n, run.data.num_classes, device=order.device)
    soft = torch.empty(n, run.data.num_classes, device=order.device) if run.soft_targets else None
    streamed = run.data.train_x.batches(order, batch_size, n) if run.data.streamed else None
    run.clock.reset()
    run.clock.mark()
    for start in range(0, n, batch_size):
        batch = order[start : start + batch_size]
        inputs = None if streamed is None else next(streamed)
        if probe is not None and start == 0:
            with probe:
                out, target = run.step(batch, inputs)
        else:
            out, target = run.step(batch, inputs)
        logits[start : start + len(batch)] = out.detach()
        if soft is not None:
            soft[start : start + len(batch)] = target
        run.clock.mark()
        bar.update()
    return logits, run.data.train_y[order[:n]] if soft is None else soft


def one_epoch(
    run: Run, epoch: int, order: torch.Tensor, probe: ActivationProbe | None, meter: EnergyMeter
) -> dict | None:
    """Train (the clock covers the steps only, the energy meter starts and stops outside it), then
    score. None when the training loss is not finite."""
    device, steps = run.device, math.ceil(len(order) / run.batch_size)
    window = CpuWindow()
    with tqdm(total=steps, desc=f"epoch {epoch}/{run.epochs}", leave=False, disable=not sys.stdout.isatty()) as bar:
        lr = run.optimizer.param_groups[0]["lr"]
        with meter.phase(f"train_epoch_{epoch}"):
            synchronize(device)
            window.start()
            start = time.perf_counter()
            logits, targets = train_epoch(run, order, bar, probe)
            synchronize(device)
            epoch_time = time.perf_counter() - start
            cpu = window.stop()
    train_loss = run.loss_fn(logits, targets).item()
    if not math.isfinite(train_loss):
        log.warning("epoch %d: training loss is %s; stopping (status diverged)", epoch, train_loss)
        return None
    # under a mix: how often the prediction is the label with the larger share of the mixed image
    train_acc = accuracy(logits.argmax(1), targets.argmax(1) if targets.ndim == 2 else targets)
    with meter.phase(f"val_epoch_{epoch}"):
        start = time.perf_counter()
        val_loss, val_acc, val_logits = evaluate(run.model, run.loss_fn, run.val_x, run.val_y, run.amp)
        scores, val_confusion = task_figures(val_logits, run.val_y, run.data.positive, "val")
        eval_time = time.perf_counter() - start
    if run.scheduler is not None:
        run.scheduler.step()
    step_ms, clean = run.clock.step_ms(), run.clock.clean()
    median, _ = clean_median_ms(step_ms, clean)
    # the epoch's robust time, as the run's: its steps x the median of its clean steps
    robust = len(step_ms) * median / 1000 if median else None
    return {
        "epoch": epoch,
        "train_loss": train_loss,
        "train_acc": train_acc,
        "val_loss": val_loss,
        "val_acc": val_acc,
        **scores,
        "val_confusion": val_confusion,
        "lr": lr,
        "epoch_time_s": robust,
        "epoch_wall_s": epoch_time,
        "samples_per_s": len(targets) / robust if robust else None,
        **step_stats(step_ms),
        **share([cpu], run.threads),
        **run.memory.read(),
        "epoch_energy_kwh": meter.energy(f"train_epoch_{epoch}"),
        "epoch_eval_energy_kwh": meter.energy(f"val_epoch_{epoch}"),
        "eval_time_s": eval_time,
        "step_ms": step_ms,
        "clean": clean,
        "window": cpu,
        "samples": len(targets),
    }


def fit(run: Run, recorder: Recorder, meter: EnergyMeter, resumed: dict | None = None) -> Fitted:
    """The epoch loop, from the epoch after `resumed`'s (a checkpoint) when there is one. Status ok;
    diverged; or interrupted by Ctrl-C, the finished epochs kept."""
    probe = None if run.compiled else ActivationProbe(run.net)
    out = Fitted(
        first_step_at=time.perf_counter(),
        logging_before_s=recorder.elapsed,
        stopper=EarlyStopping(run.early_stopping),
    )
    first = 1
    if resumed is not None:
        first = resumed["epoch"] + 1
        out.history = list(resumed["history"])
        out.stopper.load_state(resumed["early_stopping"])
    try:
        for epoch in range(first, run.epochs + 1):
            order = run.train_idx[to_device(torch.randperm(len(run.train_idx), generator=run.batch_order), run.device)]
            computed = one_epoch(run, epoch, order, probe if epoch == first else None, meter)
            if computed is None:
                out.status = "diverged"
                break
            if epoch == first:
                out.model_state_bytes = model_state_bytes(run.net, run.optimizer)
                out.activation_bytes = None if probe is None else probe.bytes
            if epoch == first + 1:  # a process's first epoch counts alone only when it is the only one
                out.steady_step_ms, out.steady_clean, out.steady_windows = [], [], []
            out.steady_step_ms += computed["step_ms"]
            out.steady_clean += computed["clean"]
            out.steady_windows.append(computed["window"])
            out.samples_per_epoch = computed["samples"]
            out.eval_time_s += computed["eval_time_s"]
            out.history.append(figures.history_row(computed))
            recorder.epoch(out.history, run.net, computed["val_confusion"], run.data.class_names)
            out.val_confusion = computed["val_confusion"]
            stop = out.stopper.epoch(out.history[-1], run.net)
            if run.checkpoint_every and epoch % run.checkpoint_every == 0:
                save_checkpoint(run, epoch, out)
            if stop:
                break
    except KeyboardInterrupt:
        out.status = "interrupted"
        # Ctrl-C may land after an epoch's row was kept and before history.csv was rewritten
        if out.history:
            recorder.save_history(out.history)
    return out


def save_checkpoint(run: Run, epoch: int, fitted: Fitted) -> None:
    checkpoint.save(
        run.out_dir / CHECKPOINT_FILE,
        {
            "epoch": epoch,
            "model": run.net.state_dict(),
            "optimizer": run.optimizer.state_dict(),
            "scheduler": None if run.scheduler is None else run.scheduler.state_dict(),
            "scaler": run.scaler.state_dict(),
            "history": fitted.history,
            "early_stopping": fitted.stopper.state(),
            "rng": checkpoint.rng_state(run.batch_order, None if run.augment is None else run.augment.generator),
            "config": run.config,
            "threads": run.threads,
        },
    )


def restore(run: Run, state: dict) -> None:
    """A checkpoint's weights, optimizer, scheduler, scaler and random streams, after setup built
    everything fresh (so the initial weights' hash is the original run's)."""
    run.net.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    if run.scheduler is not None:
        run.scheduler.load_state_dict(state["scheduler"])
    run.scaler.load_state_dict(state["scaler"])
    checkpoint.restore_rng(state["rng"], run.batch_order, None if run.augment is None else run.augment.generator)
