"""Per-step clocks and a CPU-contention sampler: speed figures that say when they cannot be trusted.

On a shared machine a single slow epoch (another program took the cores) moves a mean a long way;
the median step does not. And when other processes take the CPUs, no estimate is right: the
sampler measures how much of the machine they used while the clock ran, so the run can say so.
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


class StepClock:
    """Marks step boundaries: perf_counter on the CPU (where a step is synchronous), CUDA events on
    a GPU, recorded on the stream and read once per epoch, so there is no host sync per step."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.marks: list = []

    def reset(self) -> None:
        self.marks = []

    def mark(self) -> None:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append(event)
        else:
            self.marks.append(time.perf_counter())

    def step_ms(self) -> list[float]:
        if self.cuda:
            if self.marks:
                self.marks[-1].synchronize()
            return [a.elapsed_time(b) for a, b in zip(self.marks, self.marks[1:], strict=False)]
        return [(b - a) * 1000 for a, b in zip(self.marks, self.marks[1:], strict=False)]


def step_stats(step_ms: list[float]) -> dict[str, float | None]:
    if not step_ms:
        return {"step_time_ms_p50": None, "step_time_ms_p90": None, "step_time_ms_min": None}
    p50, p90 = np.percentile(step_ms, [50, 90])
    return {"step_time_ms_p50": float(p50), "step_time_ms_p90": float(p90), "step_time_ms_min": min(step_ms)}


def _machine_ticks() -> tuple[int, int] | None:
    """(busy, total) ticks of all CPUs since boot; busy leaves out idle and iowait."""
    try:
        fields = [int(v) for v in _STAT.read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal (guest is inside user)
    return total - fields[3] - fields[4], total


@dataclass(frozen=True)
class Window:
    """Seconds of one timed interval: wall clock, this process's CPU time (all its threads), and the
    whole machine's busy and total CPU time (None where /proc/stat cannot be read)."""

    wall: float
    cpu: float
    busy: float | None
    total: float | None


class CpuWindow:
    def start(self) -> None:
        self.wall, self.cpu, self.ticks = time.perf_counter(), time.process_time(), _machine_ticks()

    def stop(self) -> Window:
        wall, cpu, ticks = time.perf_counter() - self.wall, time.process_time() - self.cpu, _machine_ticks()
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


# Other processes' CPU use, in cores, beyond which a run's speed figures are flagged: see README
# "Shared machines" for the measurements behind it.
CONTENDED_CORES = 0.5


def contended(other_cpu_load: float | None, threads: int, cpus: int) -> bool:
    """Other processes used more than the cores this run left idle, by more than CONTENDED_CORES."""
    if other_cpu_load is None:
        return False
    return other_cpu_load * cpus > max(0, cpus - threads) + CONTENDED_CORES


def speed_summary(
    epoch_times: list[float], steady_step_ms: list[float], steady_windows: list[Window], samples: int, threads: int
) -> dict:
    """Robust speed: `epoch_time_s` is the steady epochs' step count x their median step time (an
    epoch that another program slowed moves it little); `epoch_time_mean_s` is the plain mean of
    their wall times, kept so nothing measured is hidden. Contention over the same epochs: the
    worst epoch where /proc/stat resolves one, else all steady epochs together."""
    steady = epoch_times[1:] or epoch_times
    # the epochs the steps come from: a resumed run's steps are its own session's only
    epochs_timed = len(steady_windows) or len(steady)
    steps_per_epoch = len(steady_step_ms) / epochs_timed if epochs_timed else 0
    stats = step_stats(steady_step_ms)
    epoch_time = steps_per_epoch * stats["step_time_ms_p50"] / 1000 if stats["step_time_ms_p50"] else None
    per_epoch = [share([w], threads) for w in steady_windows]
    loads = [s["other_cpu_load"] for s in per_epoch if s["other_cpu_load"] is not None]
    overall = share(steady_windows, threads) if steady_windows else {"cpu_utilisation": None, "other_cpu_load": None}
    utilisations = [s["cpu_utilisation"] for s in per_epoch if s["cpu_utilisation"] is not None]
    return {
        "epochs_run": len(epoch_times),
        "epoch_time_s": epoch_time,
        "epoch_time_mean_s": sum(steady) / len(steady) if steady else None,
        "first_epoch_time_s": epoch_times[0] if epoch_times else None,
        "train_time_s": sum(epoch_times),
        "samples_per_s": samples / epoch_time if epoch_time else None,
        **stats,
        "other_cpu_load": max(loads) if loads else overall["other_cpu_load"],
        "cpu_utilisation": min(utilisations) if utilisations and loads else overall["cpu_utilisation"],
    }
