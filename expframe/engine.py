"""The training run: `train(cfg, out_dir) -> TrainedRun`, pure of Hydra's global state.

`setup` builds every component from the config; `fit` is the epoch loop. Data sit on the device and
are batched by index; the hot loop never reads a value back to the host (each step keeps only its
logits, read once per epoch after the clock stops), so the clock measures the model, not the
bookkeeping.
"""

import hashlib
import logging
import math
import os
import sys
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from tqdm import tqdm

from expframe import checkpoint, figures
from expframe.augment import RandomResizedCropFlip, build_augment
from expframe.build import build
from expframe.data import DeviceData, load, split_indices, take
from expframe.deploy.serve import deploy
from expframe.early_stopping import EarlyStopping
from expframe.energy import EnergyMeter
from expframe.errors import ConfigError
from expframe.losses import build_loss, class_weights
from expframe.measure import ActivationProbe, PeakMemory, environment, model_state_bytes, process_age_s
from expframe.models import ModelInputs, build_model
from expframe.outputs import save_state_dict, write_json
from expframe.record import Recorder
from expframe.runtime import apply_threads, autocast, seed_everything, synchronize
from expframe.scoring import accuracy, evaluate, task_figures
from expframe.steps import GraphedStep, Step, eager_step
from expframe.timing import CpuWindow, StepClock, Window, contended, share, speed_summary, step_stats
from expframe.validate import validate

log = logging.getLogger(__name__)

MODEL_FILE = "model.pt"
# what a classifier's metrics.json says about its task beyond the figures
# the smallest validation split a run measures on (a seeded val_fraction of the training set)
MIN_VAL_SAMPLES = 5
TASK_KEYS = ("class_names", "positive", "class_weights", "val_confusion", "test_confusion")
Split = tuple[torch.Tensor, torch.Tensor]


@dataclass
class Run:
    """Everything a run trains with, built once by `setup`."""

    cfg: DictConfig
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
    augment: RandomResizedCropFlip | None = None
    class_weights: list[float] | None = None


@dataclass
class Fitted:
    """What the epoch loop leaves: the history and status, the steps and CPU windows of the steady
    epochs (the first one apart unless it is the only one), and the measured memory of training."""

    history: list[dict] = field(default_factory=list)
    status: str = "ok"
    eval_time_s: float = 0.0
    steady_step_ms: list[float] = field(default_factory=list)
    steady_windows: list[Window] = field(default_factory=list)
    samples_per_epoch: int = 0
    first_step_at: float | None = None
    logging_before_s: float = 0.0
    stopper: EarlyStopping | None = None
    model_state_bytes: int | None = None
    activation_bytes: int | None = None
    val_confusion: list | None = None


@dataclass
class TrainedRun:
    """A finished run: its figures, the trained network (uncompiled, on its device) and its config."""

    metrics: dict
    model: nn.Module
    cfg: DictConfig
    out_dir: Path


def model_inputs(data: DeviceData) -> ModelInputs:
    return ModelInputs(data.input_shape, data.num_classes)


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


def build_optimizer(cfg: DictConfig, model: nn.Module) -> torch.optim.Optimizer:
    """A CUDA graph needs optimizer state on the device (`capturable`); SGD has no such flag and needs none."""
    factory, params = build(cfg.optimizer), list(model.parameters())
    if cfg.cuda_graphs:
        try:
            return factory(params, capturable=True)
        except TypeError:
            pass
    return factory(params)


def setup(cfg: DictConfig, device: torch.device, threads: int, out_dir: Path, split: Split | None = None) -> Run:
    """The peak-memory window opens before the data load: the data are part of what a run costs.
    `split`: (train, validation) indices into the training set, a cross-validation fold; by default
    the seeded `dataset.val_fraction` split."""
    memory = PeakMemory(device)
    memory.reset()
    data = load(cfg.dataset, device)
    declared = (tuple(cfg.dataset.input_shape), cfg.dataset.num_classes)
    if (data.input_shape, data.num_classes) != declared:
        raise ConfigError(
            "dataset.input_shape",
            list(declared[0]),
            f"with num_classes={declared[1]} was declared; the loaded data have {list(data.input_shape)} "
            f"and {data.num_classes} classes",
        )
    split = split or split_indices(len(data.train_y), cfg.dataset.val_fraction, cfg.seed, data.val_size)
    train_idx, val_idx = (i.to(device) for i in split)
    if len(train_idx) < 2:
        raise ConfigError(
            "dataset.val_fraction",
            cfg.dataset.val_fraction,
            f"leaves {len(train_idx)} of {len(data.train_y)} training samples to train on; use a smaller fraction",
        )
    if not data.val_size and len(val_idx) < MIN_VAL_SAMPLES:
        raise ConfigError(
            "dataset.val_fraction",
            cfg.dataset.val_fraction,
            f"leaves {len(val_idx)} of {len(data.train_y)} samples to validate on; at least {MIN_VAL_SAMPLES} are "
            f"needed (one sample fewer or more must not move the validation accuracy by over 20 points)",
        )
    if cfg.batch_size >= len(train_idx):
        log.info(
            "batch_size=%d covers all %d training samples: each epoch is one full batch", cfg.batch_size, len(train_idx)
        )
    weights = class_weights(cfg.loss, data.train_y[train_idx], data.num_classes)
    loss_fn = build_loss(cfg.loss, data.num_classes, device, weights)
    augment = build_augment(cfg.augment, cfg.seed, device)
    if augment is not None and data.layout != "NCHW":
        raise ConfigError(
            "augment", cfg.augment.name, f"needs images (NCHW); dataset={cfg.dataset.name} is {data.layout}"
        )
    seed_everything(cfg.seed)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    net = build_model(cfg.model, cfg.activation, cfg.init, model_inputs(data)).to(device, memory_format=memory_format)
    init_hash = weights_hash(net)
    model = torch.compile(net) if cfg.compile else net
    optimizer = build_optimizer(cfg, model)
    scheduler = build(cfg.scheduler)(optimizer) if cfg.scheduler.get("_target_") else None
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision.grad_scaler)
    amp = autocast(cfg.precision, device)
    step = eager_step(model, optimizer, scaler, loss_fn, data, amp, memory_format, augment)
    if cfg.cuda_graphs and data.streamed:
        raise ConfigError("cuda_graphs", True, "needs the data resident; raise dataset.resident_max_mb")
    if cfg.cuda_graphs:
        step = GraphedStep(step, optimizer, cfg.batch_size, device)
    return Run(
        cfg=cfg,
        device=device,
        data=data,
        train_idx=train_idx,
        val_x=take(data.train_x, val_idx),
        val_y=data.train_y[val_idx],
        net=net,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        loss_fn=loss_fn,
        amp=amp,
        step=step,
        memory=memory,
        init_hash=init_hash,
        clock=StepClock(device),
        threads=threads,
        scaler=scaler,
        batch_order=torch.Generator().manual_seed(cfg.seed),
        out_dir=out_dir,
        augment=augment,
        class_weights=weights,
    )


def train_epoch(
    run: Run, order: torch.Tensor, bar: tqdm, probe: ActivationProbe | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One pass in a seeded order; a final batch of one sample is dropped (BatchNorm cannot train on it).

    Returns the epoch's logits and targets (device tensors): its training loss and accuracy are
    computed from them once the clock has stopped. The step clock marks every step boundary;
    `probe` watches what the first step saves for backward.
    """
    run.model.train()
    batch_size = run.cfg.batch_size
    n = len(order) - (len(order) % batch_size == 1)
    logits = torch.empty(n, run.data.num_classes, device=order.device)
    streamed = run.data.train_x.batches(order, batch_size, n) if run.data.streamed else None
    run.clock.reset()
    run.clock.mark()
    for start in range(0, n, batch_size):
        batch = order[start : start + batch_size]
        inputs = None if streamed is None else next(streamed)
        if probe is not None and start == 0:
            with probe:
                out = run.step(batch, inputs)
        else:
            out = run.step(batch, inputs)
        logits[start : start + len(batch)] = out.detach()
        run.clock.mark()
        bar.update()
    return logits, run.data.train_y[order[:n]]


def one_epoch(
    run: Run, epoch: int, order: torch.Tensor, probe: ActivationProbe | None, meter: EnergyMeter
) -> dict | None:
    """Train (the clock covers the steps only, the energy meter starts and stops outside it), then
    score. None when the training loss is not finite."""
    device, steps = run.device, math.ceil(len(order) / run.cfg.batch_size)
    window = CpuWindow()
    with tqdm(total=steps, desc=f"epoch {epoch}/{run.cfg.epochs}", leave=False, disable=not sys.stdout.isatty()) as bar:
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
    train_acc = accuracy(logits.argmax(1), targets)
    with meter.phase(f"val_epoch_{epoch}"):
        start = time.perf_counter()
        val_loss, val_acc, val_logits = evaluate(run.model, run.loss_fn, run.val_x, run.val_y, run.amp)
        scores, val_confusion = task_figures(val_logits, run.val_y, run.data.positive, "val")
        eval_time = time.perf_counter() - start
    if run.scheduler is not None:
        run.scheduler.step()
    step_ms = run.clock.step_ms()
    return {
        "epoch": epoch,
        "train_loss": train_loss,
        "train_acc": train_acc,
        "val_loss": val_loss,
        "val_acc": val_acc,
        **scores,
        "val_confusion": val_confusion,
        "lr": lr,
        "epoch_time_s": epoch_time,
        "samples_per_s": len(targets) / epoch_time,
        **step_stats(step_ms),
        **share([cpu], run.threads),
        **run.memory.read(),
        "epoch_energy_kwh": meter.energy(f"train_epoch_{epoch}"),
        "epoch_eval_energy_kwh": meter.energy(f"val_epoch_{epoch}"),
        "eval_time_s": eval_time,
        "step_ms": step_ms,
        "window": cpu,
        "samples": len(targets),
    }


def fit(run: Run, recorder: Recorder, meter: EnergyMeter, resumed: dict | None = None) -> Fitted:
    """The epoch loop, from the epoch after `resumed`'s (a checkpoint) when there is one. Status ok;
    diverged; or interrupted by Ctrl-C, the finished epochs kept."""
    probe = None if run.cfg.compile else ActivationProbe(run.net)
    out = Fitted(
        first_step_at=time.perf_counter(),
        logging_before_s=recorder.elapsed,
        stopper=EarlyStopping(run.cfg.early_stopping),
    )
    first = 1
    if resumed is not None:
        first = resumed["epoch"] + 1
        out.history = list(resumed["history"])
        out.stopper.load_state(resumed["early_stopping"])
    try:
        for epoch in range(first, run.cfg.epochs + 1):
            order = run.train_idx[to_device(torch.randperm(len(run.train_idx), generator=run.batch_order), run.device)]
            computed = one_epoch(run, epoch, order, probe if epoch == first else None, meter)
            if computed is None:
                out.status = "diverged"
                break
            if epoch == first:
                out.model_state_bytes = model_state_bytes(run.net, run.optimizer)
                out.activation_bytes = None if probe is None else probe.bytes
            if epoch == first + 1:  # a process's first epoch counts alone only when it is the only one
                out.steady_step_ms, out.steady_windows = [], []
            out.steady_step_ms += computed["step_ms"]
            out.steady_windows.append(computed["window"])
            out.samples_per_epoch = computed["samples"]
            out.eval_time_s += computed["eval_time_s"]
            out.history.append(figures.history_row(computed))
            recorder.epoch(out.history, run.net, computed["val_confusion"])
            out.val_confusion = computed["val_confusion"]
            stop = out.stopper.epoch(out.history[-1], run.net)
            if run.cfg.checkpoint.every and epoch % run.cfg.checkpoint.every == 0:
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
        run.out_dir / checkpoint.CHECKPOINT_FILE,
        {
            "epoch": epoch,
            "model": run.net.state_dict(),
            "optimizer": run.optimizer.state_dict(),
            "scheduler": None if run.scheduler is None else run.scheduler.state_dict(),
            "scaler": run.scaler.state_dict(),
            "history": fitted.history,
            "early_stopping": fitted.stopper.state(),
            "rng": checkpoint.rng_state(run.batch_order, None if run.augment is None else run.augment.generator),
            "config": OmegaConf.to_container(run.cfg, resolve=True),
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


def eval_energy(history: list[dict], test_kwh: float | None) -> float | None:
    """Every epoch's validation and the test evaluation; null unless each of them was measured."""
    parts = [row["epoch_eval_energy_kwh"] for row in history] + [test_kwh]
    return None if not history or any(p is None for p in parts) else sum(parts)


def majority_rate(labels: torch.Tensor) -> float:
    """The accuracy of always answering the most frequent class: chance for this test set."""
    return (torch.bincount(labels).max() / len(labels)).item()


_jobs_in_process = 0


def process_age_at(moment: float) -> float | None:
    """Seconds from the process start to `moment` (a perf_counter reading)."""
    age = process_age_s()
    return None if age is None else age - (time.perf_counter() - moment)


def close_breakdown(buckets: dict, job_start: float, logging_s: float) -> dict:
    """Every second of the job in one bucket: what the others leave of the job's wall time so far
    (the epoch's loss and accuracy after the clock, the scheduler, metrics and model.pt) is
    `bookkeeping_s`; the job adds `clean_up_s` once it has released its state."""
    buckets = {**buckets, "logging_s": logging_s}
    inside = sum(v for k, v in buckets.items() if k != "process_startup_s")
    buckets["bookkeeping_s"] = max(0.0, time.perf_counter() - job_start - inside)
    buckets["clean_up_s"] = None
    return buckets


def run_record(status: str, summary: dict, error: str | None = None, **about: object) -> dict:
    """metrics.json: one schema for every run, finished or failed (what is unknown is null)."""
    keys = ("timing_contended", "peak_rss_scope", "init_hash", "seed", "device", "precision")
    keys += ("torch_threads", "threads_from", "energy_method", "energy_sources")
    return {
        "status": status,
        "error": error,
        **summary,
        **{k: about.get(k) for k in (*keys, "model_file", "env")},
        "swept": about.get("swept") or {},
        "choices": about.get("choices") or {},
        **(about.get("task") or dict.fromkeys(TASK_KEYS)),
    }


def failure_record(error: BaseException, cfg: DictConfig, swept: dict, choices: dict, status: str = "failed") -> dict:
    return run_record(
        status,
        figures.empty_summary(),
        error=f"{type(error).__name__}: {error}",
        seed=cfg.seed,
        precision=cfg.precision.name,
        swept=swept,
        choices=choices,
    )


def train(
    cfg: DictConfig,
    out_dir: Path,
    swept: dict | None = None,
    launcher_threads: int | None = None,
    choices: dict | None = None,
    hparam_keys: list[str] | None = None,
    split: Split | None = None,
) -> TrainedRun:
    """Writes metrics.json, history.csv, model.pt and TensorBoard events into out_dir.

    `swept`: the keys this run's sweep varies, recorded for the report and TensorBoard's HParams.
    `launcher_threads`: the launcher's share of the cores, used when `device.threads` is unset.
    `choices`: the option picked in each config group (`optimizer: adam`), recorded for the report.
    `hparam_keys`: the keys the sweep varies, the only ones HParams shows (None: every swept key).
    `split`: a cross-validation fold's (train, validation) indices; its HParams row is the job's.
    """
    global _jobs_in_process
    started = time.perf_counter()
    _jobs_in_process += 1
    first_job = _jobs_in_process == 1
    device = validate(cfg)
    threads, threads_from = apply_threads(cfg.device.threads, launcher_threads)
    resumed = checkpoint.check_resumable(cfg) if cfg.get("resume") else None
    run = setup(cfg, device, threads, out_dir, split)
    if resumed is not None:
        restore(run, resumed)
    out_dir.mkdir(parents=True, exist_ok=True)
    shown = {k: v for k, v in (swept or {}).items() if hparam_keys is None or k in hparam_keys}
    with Recorder(cfg.logging, cfg, out_dir, run.net, run.val_x[:2], shown, hparams=split is None) as recorder:
        with EnergyMeter(cfg.energy, out_dir) as meter:
            fitted = fit(run, recorder, meter, resumed)
            test_acc, eval_time = None, fitted.eval_time_s
            test_scores, test_confusion = {k: None for k in figures.test_task_figures()}, None
            if fitted.status == "ok":
                fitted.stopper.restore(run.net)
                with meter.phase("test"):
                    start = time.perf_counter()
                    _, test_acc, logits = evaluate(run.model, run.loss_fn, run.data.test_x, run.data.test_y, run.amp)
                    test_scores, test_confusion = task_figures(logits, run.data.test_y, run.data.positive, "test")
                    eval_time += time.perf_counter() - start
        energy = meter.figures()
        peaks = run.memory.read()
        speed = speed_summary(
            [row["epoch_time_s"] for row in fitted.history],
            fitted.steady_step_ms,
            fitted.steady_windows,
            fitted.samples_per_epoch,
            threads,
        )
        state, activations = fitted.model_state_bytes, fitted.activation_bytes
        computed = {
            **speed,
            **peaks,
            "test_acc": test_acc,
            **test_scores,
            "eval_time_s": eval_time,
            "logging_time_s": recorder.elapsed,
            "startup_s": fitted.first_step_at - started,
            "process_startup_s": process_age_at(fitted.first_step_at) if first_job else None,
            "n_params": sum(p.numel() for p in run.net.parameters()),
            "model_state_bytes": state,
            "activation_bytes": activations,
            "train_mem_bytes": None if state is None or activations is None else state + activations,
            "stopped_epoch": fitted.stopper.stopped_epoch,
            "best_epoch": fitted.stopper.best_epoch,
            **energy,
            "energy_eval_kwh": eval_energy(fitted.history, meter.energy("test") if test_acc is not None else 0.0),
            "chance_acc": majority_rate(run.data.test_y),
        }
        saved = cfg.checkpoint.save_model and fitted.status == "ok"
        breakdown = {
            # interpreter, imports and Hydra's composition; a later job of the process starts warm
            "process_startup_s": (process_age_at(started) or 0.0) if first_job else 0.0,
            "job_setup_s": fitted.first_step_at - started - fitted.logging_before_s,
            "training_steps_s": speed["train_time_s"],
            "evaluation_s": eval_time,
            "logging_s": recorder.elapsed,
        }
        metrics = run_record(
            fitted.status,
            figures.summarise(fitted.history, computed),
            timing_contended=contended(speed["other_cpu_load"], threads, os.cpu_count() or 1),
            peak_rss_scope=peaks["peak_rss_scope"],
            init_hash=run.init_hash,
            seed=cfg.seed,
            device=str(device),
            precision=cfg.precision.name,
            torch_threads=threads,
            threads_from=threads_from,
            energy_method=energy["energy_method"],
            energy_sources=energy["energy_sources"],
            model_file=MODEL_FILE if saved else None,
            swept=swept or {},
            choices=choices or {},
            env=environment(device),
            task={
                "class_names": list(run.data.class_names or []) or None,
                "positive": run.data.positive if run.data.num_classes == 2 else None,
                "class_weights": run.class_weights,
                "val_confusion": fitted.val_confusion,
                "test_confusion": test_confusion,
            },
        )
        recorder.finish(metrics)
    if saved:
        save_state_dict(out_dir / MODEL_FILE, run.net.state_dict())
    if cfg.deploy.variants and fitted.status == "ok":
        served = deploy(run.net, run.data.test_x[:], run.data.test_y, cfg.deploy, out_dir)
        breakdown["deploy_s"] = served.pop("deploy_time_s")
        metrics.update(served)
    metrics["time_breakdown"] = close_breakdown(breakdown, started, recorder.elapsed)
    write_json(out_dir / "metrics.json", metrics)
    return TrainedRun(metrics, run.net, cfg, out_dir)
