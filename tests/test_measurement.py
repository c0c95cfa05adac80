"""Speed figures that survive background load, contention that is detected, memory that differs
between variants."""

import csv
import json
import os
import statistics
import subprocess
import sys
import time

import pytest

from expframe.data import split_indices
from expframe.measure.clocks import BUSY_CORES, Window, clean_median_ms, machine_busy, share, speed_summary, step_stats
from expframe.record import catalogue as figures
from tests.conftest import ROOT, make_cfg, needs_cuda, trained


def test_adam_keeps_two_moment_buffers_and_a_step_counter_per_parameter_tensor(tmp_path):
    sgd = trained(make_cfg("epochs=1", "optimizer=sgd"), tmp_path / "sgd")
    adam = trained(make_cfg("epochs=1", "optimizer=adam"), tmp_path / "adam")
    momentum = trained(make_cfg("epochs=1", "optimizer=sgd_momentum"), tmp_path / "momentum")
    param_bytes, tensors = sgd["n_params"] * 4, 4  # 784-128-10: two weights, two biases
    assert sgd["model_state_bytes"] == 2 * param_bytes, "parameters and gradients"
    assert adam["model_state_bytes"] - sgd["model_state_bytes"] == 2 * param_bytes + 4 * tensors
    assert momentum["model_state_bytes"] - sgd["model_state_bytes"] == param_bytes
    assert adam["activation_bytes"] == sgd["activation_bytes"]


def test_activation_bytes_of_the_default_mlp_by_hand(tmp_path):
    m = trained(make_cfg("epochs=1"), tmp_path)
    batch = 64
    by_hand = (
        batch * 784 * 4  # the gathered input batch, saved by the first Linear
        + batch * 128 * 4  # ReLU's output, saved by ReLU and by the second Linear (one storage)
        + batch * 10 * 4  # log_softmax's output, saved by cross-entropy
        + batch * 8  # the int64 targets, saved by nll_loss
        + 4  # nll_loss's total weight (a float32 scalar)
    )
    assert m["activation_bytes"] == by_hand
    assert m["train_mem_bytes"] == m["activation_bytes"] + m["model_state_bytes"]
    assert m["peak_mem_mb"] == pytest.approx(m["train_mem_bytes"] / figures.MB), "the CPU memory column"


def test_batchnorm_and_width_change_activation_bytes(tmp_path):
    base = trained(make_cfg("epochs=1", "dataset=digits"), tmp_path / "base")
    bn = trained(make_cfg("epochs=1", "dataset=digits", "model.batchnorm=true"), tmp_path / "bn")
    wide = trained(make_cfg("epochs=1", "dataset=digits", "model.width=512"), tmp_path / "wide")
    assert bn["activation_bytes"] > base["activation_bytes"] and wide["activation_bytes"] > base["activation_bytes"]
    assert wide["model_state_bytes"] > base["model_state_bytes"]


def test_a_run_reports_step_statistics_and_robust_epoch_times(tmp_path):
    m = trained(make_cfg("epochs=3", "dataset=digits"), tmp_path)
    rows = (tmp_path / "history.csv").read_text().splitlines()
    assert "step_time_ms_p50" in rows[0] and "other_cpu_load" in rows[0]
    n_train = len(split_indices(1437, 0.1, seed=0)[0])  # digits: 1,797 less the 360 test images
    steps = -(-n_train // 64)
    # the median of the clean steps: every step's median when all of them kept their core
    assert steps * m["step_time_ms_min"] / 1000 <= m["epoch_time_s"] <= steps * m["step_time_ms_p90"] / 1000
    if m["clean_step_share"] == 1.0:
        assert m["epoch_time_s"] == pytest.approx(steps * m["step_time_ms_p50"] / 1000)
    assert m["step_time_ms_min"] <= m["step_time_ms_p50"] <= m["step_time_ms_p90"]
    assert m["samples_per_s"] == pytest.approx(n_train / m["epoch_time_s"])
    assert m["epoch_wall_s"] > 0 and m["startup_s"] > 0 and m["machine_busy"] in (True, False)
    assert m["speed_unreliable"] is False and m["threads_from"] in ("torch default", "free cores")
    history = list(csv.DictReader(open(tmp_path / "history.csv")))
    # steps x the median of the clean steps against the steps' own wall: it counts the short last
    # batch (13 of 64 samples here) as a whole step, and a median sits above the mean when a few
    # steps are short, so it may pass the wall by a few percent (1.01 failed once in CI); double
    # counting or a clock around more than the steps would pass it by far more
    assert all(float(row["epoch_time_s"]) <= float(row["epoch_wall_s"]) * 1.15 for row in history)


def test_one_slow_epoch_moves_the_mean_not_the_estimate():
    """What a busy machine does: one epoch of ten takes 20x longer."""
    steps = [[1.0] * 100 for _ in range(9)] + [[20.0] * 100]
    times = [0.2] + [sum(s) / 1000 for s in steps]
    flat = [t for s in steps for t in s]
    speed = speed_summary(times, flat, [True] * len(flat), [], 100 * 64, threads=2)
    assert speed["epoch_time_s"] == pytest.approx(0.1) and speed["speed_unreliable"] is False
    assert speed["epoch_wall_s"] == pytest.approx(statistics.mean(times[1:]))
    assert speed["epoch_wall_s"] > 2 * speed["epoch_time_s"]
    assert speed["first_epoch_time_s"] == 0.2 and speed["samples_per_s"] == pytest.approx(64000)
    assert step_stats([1.0, 2.0, 3.0, 4.0, 100.0])["step_time_ms_p90"] == pytest.approx(61.6)


def test_contention_from_cpu_windows():
    # 2 CPUs, 1 s: this process used 1 CPU-second, the machine was busy 2 CPU-seconds of 2
    busy = [Window(wall=1.0, cpu=1.0, busy=2.0, total=2.0)]
    assert share(busy, threads=1) == {"cpu_utilisation": 1.0, "other_cpu_load": 0.5}
    assert share([Window(0.01, 0.01, 0.02, 0.02)], 1)["other_cpu_load"] is None, "too short for /proc/stat"
    assert not machine_busy(0.5, threads=1, cpus=2), "the other process used the core this run left idle"
    assert machine_busy(0.5, threads=2, cpus=2) and not machine_busy(BUSY_CORES / 2 - 0.01, threads=2, cpus=2)
    assert not machine_busy(None, 2, 2)


def test_the_median_of_clean_steps_holds_until_too_few_steps_kept_their_core():
    """Steps that lost their core mid-step (the scheduler gave it to another process) are left out;
    the figure is unreliable only when those that kept it are too few to stand for the run."""
    steps = [1.0] * 60 + [9.0] * 40  # 40 steps preempted: the plain median would still be 1.0 ...
    assert clean_median_ms(steps, [True] * 60 + [False] * 40) == (1.0, True)
    shifted = [1.0] * 20 + [9.0] * 80  # ... but not here, where the clean steps' median still is
    assert clean_median_ms(shifted, [True] * 20 + [False] * 80) == (1.0, False), "20% clean: too few"
    assert clean_median_ms(shifted, [True] * 30 + [False] * 70) == (1.0, True), "30%: enough"
    assert clean_median_ms([2.0] * 4, [True, True, True, False]) == (2.0, True), "few steps, most clean"
    assert clean_median_ms([2.0] * 4, [True, False, False, False])[1] is False
    assert clean_median_ms([], []) == (None, True)
    assert clean_median_ms([3.0, 5.0, 4.0], [False] * 3) == (4.0, False), "no clean step: flagged, not hidden"
    flat = [1.0] * 20 + [9.0] * 80
    speed = speed_summary([0.5, 0.6], flat, [True] * 20 + [False] * 80, [], 6400, threads=1)
    assert speed["speed_unreliable"] is True and speed["clean_step_share"] == 0.2


def test_busy_is_a_note_and_only_unreliable_figures_become_nan():
    from omegaconf import ListConfig

    from expframe.sweep.job_values import objective

    busy = {"status": "ok", "machine_busy": True, "speed_unreliable": False, "energy_unreliable": False}
    busy |= {"other_cpu_load": 0.63, "val_acc": 0.9, "epoch_time_s": 0.1, "energy_kwh": 1e-6}
    line = figures.summary_line(busy)
    assert "note: machine busy (other processes used 63% of the CPUs)" in line and "warning" not in line
    assert objective(busy, ListConfig(["val_acc", "epoch_time_s", "energy_kwh"])) == [0.9, 0.1, 1e-6]
    slow = {**busy, "speed_unreliable": True, "clean_step_share": 0.12}
    assert "warning: speed figures unreliable (only 12% of steps kept their core)" in figures.summary_line(slow)
    values = objective(slow, ListConfig(["val_acc", "epoch_time_s", "energy_kwh"]))
    assert values[0] == 0.9 and values[1] != values[1] and values[2] == 1e-6
    spent = {**busy, "energy_unreliable": True, "energy_attribution": "machine"}
    assert "warning: energy unreliable (machine attribution)" in figures.summary_line(spent)
    assert objective(spent, "energy_kwh") != objective(spent, "energy_kwh")
    # a run folder from before the flags: its timing_contended marks every speed and energy figure
    legacy = {"status": "ok", "timing_contended": True, "other_cpu_load": 0.63, "val_acc": 0.9, "epoch_time_s": 0.1}
    assert "warning: timing contended (other processes used 63% of the CPUs)" in figures.summary_line(legacy)
    values = objective(legacy, ListConfig(["val_acc", "epoch_time_s"]))
    assert values[0] == 0.9 and values[1] != values[1]


def busy_loops(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="needs Linux's /proc/stat")
def test_a_run_beside_busy_processes_takes_the_free_cores_and_its_figures_hold(tmp_path):
    """Busy loops on every core: the run takes one thread (no core is free), says the machine was
    busy, and its robust epoch time holds: not flagged, close to an idle run's at the same thread
    count, and its wall time within 2x of the idle default's."""
    cfg = ("epochs=4", "+dataset.source.repeat=3")
    idle = trained(make_cfg(*cfg), tmp_path / "idle")
    idle_one = trained(make_cfg(*cfg, "device.threads=1"), tmp_path / "idle_one")
    loops = busy_loops(os.cpu_count() or 1)
    try:
        time.sleep(0.5)
        loaded = trained(make_cfg(*cfg), tmp_path / "loaded")
    finally:
        for p in loops:
            p.kill()
            p.wait()
    assert loaded["torch_threads"] == 1 and loaded["threads_from"] == "free cores"
    assert loaded["other_cores_at_start"] > 0.5 * (os.cpu_count() or 1) - 0.5
    assert loaded["machine_busy"] is True and loaded["other_cpu_load"] > 0.3
    assert loaded["speed_unreliable"] is False and loaded["energy_unreliable"] is False
    assert "note: machine busy" in figures.summary_line(loaded) and "warning" not in figures.summary_line(loaded)
    assert idle["machine_busy"] is False and idle["other_cpu_load"] < loaded["other_cpu_load"]
    # The benchmark (python -m tests.benchmark --shared-machine) measures the 15% target over medians
    # of alternated runs. One run moves more: the VM moves 10-40% run to run, and a busy sibling core
    # slows a step that kept its own (up to 1.8x here, docs/shared-machines.md). What this holds is
    # the failure it replaces: a thread pool on cores it does not get made steps ~100x slower.
    assert loaded["epoch_time_s"] < 2.5 * idle_one["epoch_time_s"]
    # one thread beside a busy loop per core gets a fair share of a core (2/3 of one on 2 cores): its
    # wall time is 1.5-2.7x the same thread's idle; with the default's pool it was 5-30x
    assert loaded["train_time_s"] < 4 * idle_one["train_time_s"]


@needs_cuda
@pytest.mark.cuda
def test_cuda_steps_are_timed_with_events(tmp_path):
    m = trained(make_cfg("device=cuda", "epochs=2", "dataset=digits"), tmp_path)
    assert 0 < m["step_time_ms_min"] <= m["step_time_ms_p50"] and m["epoch_time_s"] > 0


@pytest.mark.slow
def test_the_time_breakdown_adds_up_to_the_outside_clock(tmp_path):
    """Every second of a run in one bucket: their sum is the process's wall time, measured by its
    parent, within 5% (what is left is the interpreter's exit, after the last record)."""
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "train.py", "epochs=2", f"hydra.run.dir={tmp_path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    assert out.returncode == 0, out.stderr[-2000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    buckets = metrics["time_breakdown"]
    assert set(buckets) == {
        "process_startup_s",
        "job_setup_s",
        "training_steps_s",
        "evaluation_s",
        "logging_s",
        "bookkeeping_s",
        "clean_up_s",
    }
    assert all(v >= 0 for v in buckets.values())
    assert sum(buckets.values()) == pytest.approx(wall, rel=0.05)
    assert buckets["training_steps_s"] == pytest.approx(metrics["train_time_s"])
    assert buckets["evaluation_s"] == pytest.approx(metrics["eval_time_s"])
    assert " time: start-up " in out.stderr + out.stdout
