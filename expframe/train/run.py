"""The training run: `train(cfg, out_dir) -> TrainedRun`, pure of Hydra's global state. It sets the run
up (setup.py), runs the epoch loop (loop.py), scores the test set and writes the run folder. The
config's values are checked before (config/, by the job); what a job does after training (serving
variants) is handed in as `after`, so the run never reaches up into deploy/."""

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from expframe.measure.clocks import MachineLoad, machine_busy, speed_summary
from expframe.measure.energy import EnergyMeter, energy_unreliable, warm_up_done
from expframe.measure.memory import environment, process_age_s
from expframe.measure.scoring import evaluate, task_figures
from expframe.measure.shift import ShiftScores, chosen
from expframe.measure.shift import score as score_shift
from expframe.models.init import initialised_layers
from expframe.record import catalogue as figures
from expframe.record.atomic import write_json
from expframe.record.files import EMISSIONS_FILE, EVENTS_GLOB, METRICS_FILE, MODEL_FILE, RETRAIN_FILE, SHIFT_FILE
from expframe.record.recorder import Recorder, RunText
from expframe.record.run_record import run_record
from expframe.record.weights import save_state_dict
from expframe.train import checkpoint, retrain
from expframe.train.loop import fit, restore
from expframe.train.runtime import apply_threads, resolve_device
from expframe.train.setup import Split, setup

log = logging.getLogger(__name__)

# after training, on a finished run: (trained network, test inputs, test labels, run folder) -> the
# figures it adds to metrics.json, `deploy_time_s` among them (the job passes deploy.serve's)
AfterTraining = Callable[[nn.Module, torch.Tensor, torch.Tensor, Path], dict]


@dataclass
class TrainedRun:
    """A finished run: its figures, the trained network (uncompiled, on its device) and its config."""

    metrics: dict
    model: nn.Module
    cfg: DictConfig
    out_dir: Path


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


def train(
    cfg: DictConfig,
    out_dir: Path,
    swept: dict | None = None,
    launcher_threads: int | None = None,
    choices: dict | None = None,
    hparam_keys: list[str] | None = None,
    split: Split | None = None,
    after: AfterTraining | None = None,
    started: float | None = None,
) -> TrainedRun:
    """Writes metrics.json, history.csv, model.pt and TensorBoard events into out_dir.

    `swept`: the keys this run's sweep varies, recorded for the report and TensorBoard's HParams.
    `launcher_threads`: the launcher's share of the cores, used when `device.threads` is unset.
    `choices`: the option picked in each config group (`optimizer: adam`), recorded for the report.
    `hparam_keys`: the keys the sweep varies, the only ones HParams shows (None: every swept key).
    `split`: a cross-validation fold's (train, validation) indices; its HParams row is the job's.
    `after`: what the job does with a finished run's network (serving variants), timed in `deploy_s`.
    `started`: when the job began (a perf_counter reading), so the checks the job ran before this
    count in `job_setup_s` like the rest of its set-up; default now. The config's values were
    checked before (config.validate, by the job).
    """
    global _jobs_in_process
    started = time.perf_counter() if started is None else started
    _jobs_in_process += 1
    first_job = _jobs_in_process == 1
    load = MachineLoad().start()
    device = resolve_device(cfg.device)
    resumed = checkpoint.check_resumable(cfg) if cfg.get("resume") else None
    run = setup(cfg, device, out_dir, split)
    cpus = os.cpu_count() or 1
    warm_up_done()
    free, others = load.free_cores(cpus)
    kept = None if resumed is None else resumed.get("threads")
    threads, threads_from = apply_threads(cfg.device.threads, launcher_threads, free, kept)
    run.threads = threads
    # said in the log when the machine's load decided it; metrics.json always records it
    log.log(
        logging.INFO if threads_from == "free cores" else logging.DEBUG,
        "torch threads: %d (%s: %s of %d cores busy with other processes at start)",
        threads,
        threads_from,
        "unknown" if others is None else f"{others:.1f}",
        cpus,
    )
    if resumed is not None:
        restore(run, resumed)
    out_dir.mkdir(parents=True, exist_ok=True)
    # HParams: every group's choice (a digits MLP and a digits CNN differ there) and the swept keys
    shown = {**(choices or {}), **{k: v for k, v in (swept or {}).items() if hparam_keys is None or k in hparam_keys}}
    about = RunText(config_yaml=lambda: OmegaConf.to_yaml(cfg), env=lambda: environment(device))
    layers = initialised_layers(run.net)
    # an earlier attempt's TensorBoard events in this folder are hidden from the first epoch this one logs
    purge = resumed["epoch"] + 1 if resumed is not None else (0 if any(out_dir.glob(EVENTS_GLOB)) else None)
    recorder = Recorder(cfg.logging, out_dir, run.net, run.val_x[:2], shown, about, layers, split is None, purge)
    with recorder:
        with EnergyMeter(cfg.energy, out_dir / EMISSIONS_FILE, threads) as meter:
            fitted = fit(run, recorder, meter, resumed)
            test_acc, eval_time = None, fitted.eval_time_s
            test_scores, test_confusion = {k: None for k in figures.test_task_figures()}, None
            gated = None
            if fitted.status == "ok":
                fitted.stopper.restore(run.net)
                with meter.phase("test"):
                    start = time.perf_counter()
                    _, test_acc, logits = evaluate(run.model, run.loss_fn, run.data.test_x, run.data.test_y, run.amp)
                    test_scores, test_confusion = task_figures(logits, run.data.test_y, run.data.positive, "test")
                    if run.retraining is not None:  # both models on the original test and the new held-out data
                        gated = retrain.gate(
                            run.retraining, cfg.retrain, run.net, run.loss_fn, run.data.test_x, run.data.test_y, run.amp
                        )
                    eval_time += time.perf_counter() - start
        energy = meter.figures()
        peaks = run.memory.read()
        # after the memory peaks are read: the corrupted sets are the evaluation's, not the training's
        shifted, shift_time = None, None
        if fitted.status == "ok" and chosen(cfg.get("shift")):
            start = time.perf_counter()
            shifted = score_shift(run.model, run.data, cfg.shift, run.amp)
            recorder.shift(shifted.accuracy)
            shift_time = time.perf_counter() - start
        speed = speed_summary(
            # a checkpoint from before epoch_wall_s has the wall time under epoch_time_s
            [row.get("epoch_wall_s", row["epoch_time_s"]) for row in fitted.history],
            fitted.steady_step_ms,
            fitted.steady_clean,
            fitted.steady_windows,
            fitted.samples_per_epoch,
            threads,
        )
        # busy: others held cores when it started (it took fewer threads for them), or used more
        # than the cores it left idle while it trained
        busy = threads_from == "free cores" or machine_busy(speed["other_cpu_load"], threads, cpus)
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
            **(shifted.figures() if shifted else ShiftScores.none()),
            **retrain.figures(gated),
        }
        saved = cfg.checkpoint.save_model and fitted.status == "ok"
        # a retraining the gate rejects is kept beside, never as the model.pt other tools serve
        model_file = gated["model"] if gated else MODEL_FILE
        if gated and not saved:
            gated["model"] = None
        breakdown = {
            # interpreter, imports and Hydra's composition; a later job of the process starts warm
            "process_startup_s": (process_age_at(started) or 0.0) if first_job else 0.0,
            "job_setup_s": fitted.first_step_at - started - fitted.logging_before_s,
            "training_steps_s": speed["train_time_s"],
            "evaluation_s": eval_time,
            "logging_s": recorder.elapsed,
        }
        if shift_time is not None:
            breakdown["shift_eval_s"] = shift_time
        metrics = run_record(
            fitted.status,
            figures.summarise(fitted.history, computed),
            machine_busy=busy,
            speed_unreliable=speed["speed_unreliable"],
            energy_unreliable=energy_unreliable(
                cfg.energy.attribution, bool(meter.phases), busy, speed["speed_unreliable"], threads
            ),
            peak_rss_scope=peaks["peak_rss_scope"],
            init_hash=run.init_hash,
            seed=cfg.seed,
            device=str(device),
            precision=cfg.precision.name,
            torch_threads=threads,
            threads_from=threads_from,
            other_cores_at_start=others,
            energy_method=energy["energy_method"],
            energy_attribution=energy["energy_attribution"],
            energy_sources=energy["energy_sources"],
            model_file=model_file if saved else None,
            shift_inputs_sha256=shifted.inputs_sha256 if shifted else None,
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
        save_state_dict(out_dir / model_file, run.net.state_dict())
    if gated:
        write_json(out_dir / RETRAIN_FILE, gated)
    if shifted:
        write_json(out_dir / SHIFT_FILE, shifted.as_json())
    if after is not None and fitted.status == "ok":
        served = after(run.net, run.data.test_x[:], run.data.test_y, out_dir)
        breakdown["deploy_s"] = served.pop("deploy_time_s")
        metrics.update(served)
    metrics["time_breakdown"] = close_breakdown(breakdown, started, recorder.elapsed)
    write_json(out_dir / METRICS_FILE, metrics)
    return TrainedRun(metrics, run.net, cfg, out_dir)
