"""Energy and CO2eq of a run, from CodeCarbon's offline tracker.

Never the online tracker: without a network it silently falls back to another country's grid. Each
phase (an epoch's training steps, its validation, the test evaluation) is one CodeCarbon task,
started and stopped outside the epoch clock, so the meter is never inside a timed figure. The
tracker itself is started only at the end, to write its CSV files: started from the beginning, its
periodic scheduler is stopped and restarted around every task (~2.5 ms a phase, against ~0.9 ms).
CodeCarbon's first start in a process detects the hardware (~1.2 s, mostly a py-cpuinfo
subprocess); `warm_up` runs that detection in a background thread from the start of the command,
and the result is cached for every later job of the process.
"""

import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from expframe.errors import ConfigError
from expframe.measure.clocks import CpuWindow
from expframe.measure.signals import Terminated, received

log = logging.getLogger("expframe")

TRACKING_MODES = ("machine", "process")
# cpu_time: the run's own CPU seconds x a core's power (docs/energy.md); machine: CodeCarbon's figure
ATTRIBUTIONS = ("cpu_time", "machine")
# CodeCarbon's CPU modes that read an energy counter (RAPL, Windows EMI, Power Gadget, powermetrics);
# the others multiply a TDP by the CPU load
METERED_CPU_MODES = ("intel_rapl", "windows_emi", "intel_power_gadget", "apple_powermetrics")
KWH_TO_J = 3.6e6

_warm: threading.Thread | None = None


def _quiet_codecarbon() -> None:
    """Its logger says "offline tracker init" and "multiple instances allowed" on every tracker;
    the `log_level` argument is applied after the first of those lines."""
    logging.getLogger("codecarbon").setLevel(logging.ERROR)


def tracker_options(settings: DictConfig) -> dict[str, Any]:
    """`allow_multiple_runs`: no lock file in /tmp and no SIGINT/SIGTERM handlers replaced (the
    lock installs both); parallel jobs of a sweep each keep their own tracker."""
    return {
        "country_iso_code": settings.country_iso_code,
        "tracking_mode": settings.tracking_mode,
        "log_level": "error",
        "allow_multiple_runs": True,
    }


def check_settings(settings: DictConfig) -> None:
    """The country must be one CodeCarbon has an energy mix for: it would otherwise fall back to a
    world average and say so only in its (silenced) log."""
    if settings.attribution not in ATTRIBUTIONS:
        raise ConfigError("energy.attribution", settings.attribution, f"must be one of {', '.join(ATTRIBUTIONS)}")
    if settings.tracking_mode not in TRACKING_MODES:
        raise ConfigError("energy.tracking_mode", settings.tracking_mode, f"must be one of {', '.join(TRACKING_MODES)}")
    code = settings.country_iso_code
    if not (isinstance(code, str) and len(code) == 3 and code.isalpha() and code.isupper()):
        raise ConfigError("energy.country_iso_code", code, "must be a 3-letter ISO 3166 code (e.g. FRA, DEU, USA)")
    if not settings.track:  # which grids CodeCarbon knows is read from its data only when it measures
        return
    from codecarbon.input import DataSource

    mixes = DataSource().get_global_energy_mix_data()
    if code not in mixes:
        raise ConfigError(
            "energy.country_iso_code",
            code,
            "is not a 3-letter ISO 3166 code CodeCarbon knows (e.g. FRA, DEU, USA, GBR, CHE)",
        )


# arguments after which no training follows, or that turn the tracker off
NO_TRAINING = ("-h", "--help", "--hydra-help", "-i", "--info", "-c", "--cfg", "-sc", "--shell-completion")


def warm_up_for(argv: list[str]) -> None:
    """At the start of the command, before torch is imported and Hydra composes: the detection
    then overlaps them. A command line that turns tracking off, or asks only for help or a
    config, skips it."""
    if any(arg in NO_TRAINING or arg.replace(" ", "") == "energy.track=false" for arg in argv):
        return
    warm_up()


def warm_up() -> None:
    """CodeCarbon's slow step, once per process and off the critical path: py-cpuinfo names the CPU
    in a subprocess (~1.1 s of waiting, cached for the process). Only that: importing CodeCarbon
    itself (pandas, ~0.3 s) in this thread would hold the interpreter lock against the imports of
    the main thread. `EnergyMeter` waits for it."""
    global _warm
    if _warm is not None:
        return

    def detect() -> None:
        try:
            from codecarbon.core.util import detect_cpu_model

            detect_cpu_model()
        except Exception:  # only a head start: the tracker detects again, and reports, if this failed
            return  # e.g. the command ended (a bad input) while the subprocess ran: nothing to say

    _warm = threading.Thread(target=detect, name="expframe-energy-warm-up", daemon=True)
    _warm.start()


def warm_up_done() -> None:
    """Waits for the warm-up's subprocess, whose CPU time would otherwise count as another
    process's load when the run reads the machine's (it usually ended during the imports)."""
    if _warm is not None:
        _warm.join()


@dataclass
class Phase:
    """One measured phase: energy (kWh), CPU and RAM energy (kWh), emissions (kg) and seconds."""

    energy_kwh: float
    cpu_kwh: float
    ram_kwh: float
    gpu_kwh: float
    emissions_kg: float
    duration_s: float


def attributed(
    measured: Phase, cpu_s: float, machine_busy_s: float | None, threads: int, core_w: float | None
) -> Phase:
    """The part of a phase's energy that is the run's own work, whatever else the machine ran.

    CPU: the run's CPU seconds x one core's power (`core_w`, CodeCarbon's TDP over the cores: its
    `process` mode's linear model) where the power is estimated; where a counter measured it (RAPL),
    the measured energy x the run's share of the machine's busy CPU time. RAM: its modelled power
    for the time the run's threads computed (CPU seconds / threads), not for a wall clock that other
    processes stretched. A GPU's counter is the GPU's own: kept. Emissions follow the energy.
    """
    if core_w is not None:
        cpu_kwh = core_w * cpu_s / KWH_TO_J
    elif machine_busy_s:
        cpu_kwh = measured.cpu_kwh * min(1.0, cpu_s / machine_busy_s)
    else:
        cpu_kwh = measured.cpu_kwh
    computed_s = min(measured.duration_s, cpu_s / max(1, threads))
    ram_kwh = measured.ram_kwh * (computed_s / measured.duration_s if measured.duration_s > 0 else 1.0)
    energy = cpu_kwh + ram_kwh + measured.gpu_kwh
    intensity = measured.emissions_kg / measured.energy_kwh if measured.energy_kwh else 0.0
    return Phase(energy, cpu_kwh, ram_kwh, measured.gpu_kwh, energy * intensity, computed_s)


def energy_unreliable(
    attribution: str, measured: bool, machine_busy: bool, speed_unreliable: bool, threads: int
) -> bool:
    """Machine attribution counts other processes' work whenever the machine was busy. CPU-time
    attribution holds on a busy machine, except where threads that were descheduled mid-step made
    the others spin-wait (more than one thread and a speed figure that could not hold): their
    waiting is CPU time too."""
    if not measured:
        return False
    if attribution == "machine":
        return machine_busy
    return speed_unreliable and threads > 1


@dataclass
class EnergyMeter:
    """`phase(name)` measures one phase; `energy(name)` is its kWh (None when unmeasured);
    `figures()` sums what this process measured. With `energy.track=false` every figure is null and
    no CodeCarbon code runs."""

    settings: DictConfig
    emissions_file: Path  # CodeCarbon's CSV, in the run's folder (its name: record/files.py)
    threads: int = 1  # the run's torch threads, for the RAM share of CPU-time attribution
    phases: dict[str, Phase] = field(default_factory=dict)  # the run's, as attributed
    measured: dict[str, Phase] = field(default_factory=dict)  # CodeCarbon's, as in its CSV files
    core_w: float | None = None  # one core's modelled power (core_power_w), read once per tracker
    tracker: Any = None
    sources: dict[str, str] = field(default_factory=dict)

    def __enter__(self) -> "EnergyMeter":
        if not self.settings.track:
            return self
        warm_up()
        _warm.join()
        from codecarbon import OfflineEmissionsTracker

        _quiet_codecarbon()
        folder = self.emissions_file.parent
        folder.mkdir(parents=True, exist_ok=True)  # a missing folder makes its CSV fail silently
        self.tracker = OfflineEmissionsTracker(
            output_dir=str(folder),
            output_file=self.emissions_file.name,
            project_name=folder.name,
            **tracker_options(self.settings),
        )
        self.core_w = core_power_w(self.tracker)
        return self

    def __exit__(self, *exc: object) -> None:
        """emissions.csv (the phases' total) and emissions_base_<run id>.csv (one row per phase)."""
        if self.tracker is not None and self.phases:
            self.sources = power_sources(self.tracker)
            with interrupts_deferred():
                self.tracker.start()
                self.tracker.stop()

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if self.tracker is None:
            yield
            return
        with interrupts_deferred():
            self.tracker.start_task(name)
        window = CpuWindow()
        window.start()
        try:
            yield
        finally:
            used = window.stop()
            with interrupts_deferred():
                data = self.tracker.stop_task(name)  # CodeCarbon logs and returns None on a failure
            if data is not None:
                measured = Phase(
                    data.energy_consumed,
                    data.cpu_energy,
                    data.ram_energy,
                    data.gpu_energy,
                    data.emissions,
                    data.duration,
                )
                self.measured[name] = measured
                if self.settings.attribution == "cpu_time":
                    measured = attributed(measured, used.cpu, used.busy, self.threads, self.core_w)
                self.phases[name] = measured

    def energy(self, name: str) -> float | None:
        phase = self.phases.get(name)
        return None if phase is None else phase.energy_kwh

    @property
    def method(self) -> str | None:
        """`metered` when the CPU's power comes from an energy counter (and a GPU's from NVML),
        `estimated` when it is CodeCarbon's model (load x TDP); RAM is always a model."""
        if not self.phases:
            return None
        return "metered" if self.sources.get("cpu") in METERED_CPU_MODES else "estimated"

    def figures(self) -> dict[str, Any]:
        """Mean power and grid intensity over the phases this process measured."""
        measured = list(self.phases.values())
        seconds = sum(p.duration_s for p in measured)
        energy = sum(p.energy_kwh for p in measured)
        out: dict[str, Any] = {
            "energy_method": self.method,
            "energy_sources": self.sources or None,
            "energy_attribution": self.settings.attribution if measured else None,
            # CodeCarbon's own figure for the same phases (emissions.csv): the whole machine's
            "energy_measured_kwh": sum(p.energy_kwh for p in self.measured.values()) if measured else None,
        }
        if not seconds or not energy:
            return {
                **out,
                "cpu_power_w": None,
                "ram_power_w": None,
                "gpu_power_w": None,
                "carbon_intensity_g_per_kwh": None,
            }
        return {
            **out,
            "cpu_power_w": sum(p.cpu_kwh for p in measured) * KWH_TO_J / seconds,
            "ram_power_w": sum(p.ram_kwh for p in measured) * KWH_TO_J / seconds,
            "gpu_power_w": sum(p.gpu_kwh for p in measured) * KWH_TO_J / seconds if "gpu" in self.sources else None,
            "carbon_intensity_g_per_kwh": sum(p.emissions_kg for p in measured) * 1000 / energy,
        }


DEFERRED = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def interrupts_deferred() -> Iterator[None]:
    """CodeCarbon's schedulers take a lock without try/finally: a Ctrl-C between its acquire and
    release leaves it held, and the next stop waits on it forever. A SIGINT (SIGTERM) during a
    CodeCarbon call is held back and raised as KeyboardInterrupt (Terminated) once the call has
    returned; the previous handlers are back in place either way."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: caught.append(signum)) for s in DEFERRED}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if signal.SIGTERM in caught:
            received.append(signal.SIGTERM)
            raise Terminated("received signal SIGTERM")
        if caught:
            raise KeyboardInterrupt


def core_power_w(tracker: Any) -> float | None:
    """One core's share of the CPU's power where CodeCarbon models it (TDP / cores); None where a
    counter measures it. CodeCarbon exposes both only on its hardware objects."""
    for hardware in tracker._hardware:
        if type(hardware).__name__ == "CPU" and hardware._mode not in METERED_CPU_MODES:
            return hardware._tdp / (os.cpu_count() or 1) if hardware._tdp else None
    return None


def power_sources(tracker: Any) -> dict[str, str]:
    """How CodeCarbon gets each part's power: `cpu` its CPU mode (`intel_rapl` reads an energy
    counter, `cpu_load` multiplies a TDP by the load), `ram` always a model of the installed memory,
    `gpu` NVML's energy counter. CodeCarbon exposes this only on its hardware objects."""
    sources = {}
    for hardware in tracker._hardware:
        kind = type(hardware).__name__
        if kind == "CPU":
            sources["cpu"] = hardware._mode
        elif kind == "RAM":
            sources["ram"] = "model"
        elif kind == "GPU":
            sources["gpu"] = "nvml"
    return sources
