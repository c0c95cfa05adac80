"""Per-step clocks, the machine's load, and speed figures that hold on a busy machine.

A shared machine is the normal case. Two questions are kept apart (docs/shared-machines.md):
- was the machine busy? Other processes' share of the CPUs, sampled from /proc/stat around each
  epoch (`machine_busy`): recorded and shown, never a reason to drop a figure;
- does the figure hold? The epoch time is the step count x the median of the *clean* steps, those
  during which the training thread ran for at least `CLEAN_RAN_SHARE` of the step's wall time
  (the scheduler did not take its core away mid-step). A step shorter than the scheduler's slice is
  mostly clean however busy the machine is; the figure is `speed_unreliable` only when too few
  steps were clean for their median to stand for the run.
"""

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

_STAT = Path("/proc/stat")
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
# /proc/stat counts in ticks of 10 ms: shorter windows say nothing about the machine's load
MIN_WINDOW_S = 0.25


# a step is clean when the training thread ran for at least this share of its wall time
CLEAN_RAN_SHARE = 0.9
# the clean steps' median stands for the run while at least this share of the steps are clean ...
MIN_CLEAN_SHARE = 0.25
# ... and, with fewer clean steps than this, while at least half of them are
MIN_CLEAN_STEPS = 10


class StepClock:
    """Marks step boundaries: perf_counter and the training thread's CPU clock on the CPU (where a
    step is synchronous), CUDA events on a GPU, recorded on the stream and read once per epoch, so
    there is no host sync per step. The GPU's clock is its own: every GPU step counts as clean."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.marks: list = []
        self.ran: list[float] = []

    def reset(self) -> None:
        self.marks, self.ran = [], []

    def mark(self) -> None:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append(event)
        else:
            self.marks.append(time.perf_counter())
            self.ran.append(time.thread_time())

    def step_ms(self) -> list[float]:
        if self.cuda:
            if self.marks:
                self.marks[-1].synchronize()
            return [a.elapsed_time(b) for a, b in zip(self.marks, self.marks[1:], strict=False)]
        return [(b - a) * 1000 for a, b in zip(self.marks, self.marks[1:], strict=False)]

    def clean(self) -> list[bool]:
        """Per step: did the training thread run for CLEAN_RAN_SHARE of it (always, on a GPU)?"""
        if self.cuda:
            return [True] * max(0, len(self.marks) - 1)
        walls = [b - a for a, b in zip(self.marks, self.marks[1:], strict=False)]
        ran = [b - a for a, b in zip(self.ran, self.ran[1:], strict=False)]
        return [c >= CLEAN_RAN_SHARE * w for w, c in zip(walls, ran, strict=True)]


def clean_median_ms(step_ms: list[float], clean: list[bool]) -> tuple[float | None, bool]:
    """The median of the clean steps and whether it stands for the run: at least MIN_CLEAN_SHARE of
    the steps clean, and at least half of them when fewer than MIN_CLEAN_STEPS are. With no clean
    step at all, every step's median, which cannot hold: nothing measured is hidden, and the flag
    keeps it out of every comparison."""
    kept = [t for t, ok in zip(step_ms, clean, strict=True) if ok]
    if not step_ms:
        return None, True
    share_clean = len(kept) / len(step_ms)
    holds = share_clean >= MIN_CLEAN_SHARE and (len(kept) >= MIN_CLEAN_STEPS or share_clean >= 0.5)
    return float(np.median(kept or step_ms)), holds


def step_stats(step_ms: list[float]) -> dict[str, float | None]:
    if not step_ms:
        return {"step_time_ms_p50": None, "step_time_ms_p90": None, "step_time_ms_min": None}
    p50, p90 = np.percentile(step_ms, [50, 90])
    return {"step_time_ms_p50": float(p50), "step_time_ms_p90": float(p90), "step_time_ms_min": min(step_ms)}


def _machine_ticks() -> tuple[int, int] | None:
    """(busy, total) ticks of all CPUs since boot; busy leaves out idle, iowait and `nice` time:
    processes at a lower priority (the report worker runs at nice 19) yield their core to a run at
    normal priority, so they do not make the machine busy for it."""
    try:
        fields = [int(v) for v in _STAT.read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal (guest is inside user)
    return total - fields[1] - fields[3] - fields[4], total


@dataclass(frozen=True)
class Window:
    """Seconds of one timed interval: wall clock, this process's CPU time (all its threads), and the
    whole machine's busy and total CPU time (None where /proc/stat cannot be read)."""

    wall: float
    cpu: float
    busy: float | None
    total: float | None


def _own_cpu_s() -> float:
    """This process's CPU time (to the nanosecond) and its ended children's (a subprocess it ran is
    its own work; their clock counts in ticks, and is mostly zero)."""
    children = os.times()
    return time.process_time() + children.children_user + children.children_system


class CpuWindow:
    def start(self) -> None:
        self.wall, self.cpu, self.ticks = time.perf_counter(), _own_cpu_s(), _machine_ticks()

    def stop(self) -> Window:
        wall, cpu, ticks = time.perf_counter() - self.wall, _own_cpu_s() - self.cpu, _machine_ticks()
        if ticks is None or self.ticks is None:
            return Window(wall, cpu, None, None)
        return Window(wall, cpu, (ticks[0] - self.ticks[0]) / _TICK, (ticks[1] - self.ticks[1]) / _TICK)


def share(windows: list[Window], threads: int) -> dict[str, float | None]:
    """Over the windows together: `cpu_utilisation`, this process's CPU time over wall x threads;
    `other_cpu_load`, the fraction of the machine's CPU capacity other processes used (None when the
    windows are too short for /proc/stat's 10 ms ticks, or it cannot be read)."""
    wall, cpu = sum(w.wall for w in windows), sum(w.cpu for w in windows)
    utilisation = cpu / (wall * threads) if wall > 0 else None
    if wall < MIN_WINDOW_S or any(w.total is None for w in windows):
        return {"cpu_utilisation": utilisation, "other_cpu_load": None}
    busy, total = sum(w.busy for w in windows), sum(w.total for w in windows)
    other = min(1.0, max(0.0, busy - cpu) / total) if total > 0 else None
    return {"cpu_utilisation": utilisation, "other_cpu_load": other}


# Other processes' CPU use, in cores, beyond the cores this run left idle, from which the machine
# counts as busy (docs/shared-machines.md)
BUSY_CORES = 0.25


def machine_busy(other_cpu_load: float | None, threads: int, cpus: int) -> bool:
    """Other processes used more than the cores this run left idle, by more than BUSY_CORES. Said,
    never a reason on its own to leave a figure out."""
    if other_cpu_load is None:
        return False
    return other_cpu_load * cpus > max(0, cpus - threads) + BUSY_CORES


# the shortest window over which the machine's load decides a thread count
LOAD_WINDOW_S = 0.1


class MachineLoad:
    """Other processes' use of the CPUs from `start()` to `free_cores()`: the run starts it before its
    set-up and reads it after, so the sample costs no time unless set-up took under LOAD_WINDOW_S."""

    def start(self) -> "MachineLoad":
        self.window = CpuWindow()
        self.window.start()
        return self

    def free_cores(self, cpus: int) -> tuple[int, float | None]:
        """Cores not busy with other processes (at least one) and their load in cores (None where
        /proc/stat cannot be read: then every core counts as free)."""
        left = LOAD_WINDOW_S - (time.perf_counter() - self.window.wall)
        if left > 0:
            time.sleep(left)
        window = self.window.stop()
        if window.busy is None or window.total is None or window.total <= 0:
            return cpus, None
        other = max(0.0, window.busy - window.cpu) / window.wall
        return max(1, min(cpus, cpus - round(other))), other


def speed_summary(
    epoch_times: list[float],
    steady_step_ms: list[float],
    steady_clean: list[bool],
    steady_windows: list[Window],
    samples: int,
    threads: int,
) -> dict:
    """Speed that holds on a busy machine: `epoch_time_s` is the steady epochs' step count x the
    median of their clean steps, `speed_unreliable` when that median cannot stand for the run;
    `epoch_wall_s` is the plain mean of their wall times, kept so nothing measured is hidden. The
    machine's load over the same epochs: the worst epoch where /proc/stat resolves one, else all
    steady epochs together."""
    steady = epoch_times[1:] or epoch_times
    # the epochs the steps come from: a resumed run's steps are its own session's only
    epochs_timed = len(steady_windows) or len(steady)
    steps_per_epoch = len(steady_step_ms) / epochs_timed if epochs_timed else 0
    stats = step_stats(steady_step_ms)
    median, holds = clean_median_ms(steady_step_ms, steady_clean)
    epoch_time = steps_per_epoch * median / 1000 if median else None
    per_epoch = [share([w], threads) for w in steady_windows]
    loads = [s["other_cpu_load"] for s in per_epoch if s["other_cpu_load"] is not None]
    overall = share(steady_windows, threads) if steady_windows else {"cpu_utilisation": None, "other_cpu_load": None}
    utilisations = [s["cpu_utilisation"] for s in per_epoch if s["cpu_utilisation"] is not None]
    return {
        "epochs_run": len(epoch_times),
        "epoch_time_s": epoch_time,
        "epoch_wall_s": sum(steady) / len(steady) if steady else None,
        "first_epoch_time_s": epoch_times[0] if epoch_times else None,
        "train_time_s": sum(epoch_times),
        "samples_per_s": samples / epoch_time if epoch_time else None,
        **stats,
        "clean_step_share": sum(steady_clean) / len(steady_clean) if steady_clean else None,
        "speed_unreliable": not holds,
        "other_cpu_load": max(loads) if loads else overall["other_cpu_load"],
        "cpu_utilisation": min(utilisations) if utilisations and loads else overall["cpu_utilisation"],
    }
