"""Energy and CO2eq from CodeCarbon's offline tracker: figures, its CSV files, quiet, no side effects."""

import csv
import json
import logging
import os
import signal
from pathlib import Path

import pytest
from codecarbon.input import DataSource
from codecarbon.lock import LOCKFILE
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from expframe.config.validate import validate
from expframe.errors import ConfigError
from expframe.measure import energy
from expframe.record import catalogue as figures
from expframe.record.files import EMISSIONS_FILE
from tests.conftest import make_cfg, run_cli, run_like_hydra, trained

ENERGY = ("energy_kwh", "energy_train_kwh", "energy_eval_kwh", "emissions_g_co2eq", "cpu_power_w", "ram_power_w")


def rows(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def energy_run(tmp_path_factory):
    """A 3-epoch run with energy on (the default), TensorBoard on; signal handlers before and after."""
    out = tmp_path_factory.mktemp("energy") / "run"
    handlers = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    metrics = trained(make_cfg("dataset=digits", "epochs=3", "logging.tensorboard=true"), out)
    return out, metrics, handlers


def test_energy_figures_are_present_positive_and_consistent(energy_run):
    out, m, _ = energy_run
    for key in ENERGY:
        assert m[key] is not None and m[key] > 0, key
    history = rows(out / "history.csv")
    train = [float(r["epoch_energy_kwh"]) for r in history]
    assert len(train) == 3 and all(e > 0 for e in train)
    assert m["energy_train_kwh"] == pytest.approx(sum(train))
    assert m["energy_kwh"] == pytest.approx(m["energy_train_kwh"] + m["energy_eval_kwh"])
    assert m["energy_eval_kwh"] > sum(float(r["epoch_eval_energy_kwh"]) for r in history), "the test set counts"
    intensity = DataSource().get_global_energy_mix_data()["FRA"]["carbon_intensity"]
    assert m["carbon_intensity_g_per_kwh"] == pytest.approx(intensity)
    assert m["emissions_g_co2eq"] == pytest.approx(m["energy_kwh"] * intensity)
    points = (m["test_acc"] - m["chance_acc"]) * 100
    assert m["energy_kwh_per_point"] == pytest.approx(m["energy_kwh"] / points)


def test_an_estimate_is_labelled_as_one(energy_run):
    """This VM has no readable RAPL counter: CodeCarbon models the CPU from its load and a TDP."""
    _, m, _ = energy_run
    cpu = m["energy_sources"]["cpu"]
    assert m["energy_sources"]["ram"] == "model"
    assert m["energy_method"] == ("metered" if cpu in energy.METERED_CPU_MODES else "estimated")
    if not os.access("/sys/class/powercap/intel-rapl:0/energy_uj", os.R_OK):
        assert (cpu, m["energy_method"]) == ("cpu_load", "estimated")
    assert f"({m['energy_method']})" in figures.summary_line(m)


def test_codecarbon_writes_its_csv_files_into_the_run_folder(energy_run):
    """CodeCarbon's files hold what it measured; metrics.json says so beside the run's own share."""
    out, m, _ = energy_run
    total = rows(out / EMISSIONS_FILE)
    assert len(total) == 1 and float(total[0]["energy_consumed"]) == pytest.approx(m["energy_measured_kwh"])
    assert total[0]["country_iso_code"] == "FRA"
    (phases,) = out.glob("emissions_base_*.csv")
    tasks = {r["task_name"]: r for r in rows(phases)}
    assert set(tasks) == {"train_epoch_1", "train_epoch_2", "train_epoch_3", "val_epoch_1", "val_epoch_2"} | {
        "val_epoch_3",
        "test",
    }
    assert sum(float(r["energy_consumed"]) for r in tasks.values()) == pytest.approx(m["energy_measured_kwh"])
    for r, epoch in zip(rows(out / "history.csv"), (1, 2, 3), strict=True):
        phase = tasks[f"train_epoch_{epoch}"]
        # the phase encloses the epoch clock, and the meter's own start and stop stay outside it
        assert float(phase["duration"]) >= float(r["epoch_wall_s"])


def test_machine_attribution_reports_what_codecarbon_measured(tmp_path):
    m = trained(make_cfg("dataset=digits", "epochs=2", "energy.attribution=machine"), tmp_path)
    phases = {r["task_name"]: r for r in rows(next(tmp_path.glob("emissions_base_*.csv")))}
    history = rows(tmp_path / "history.csv")
    assert m["energy_attribution"] == "machine" and m["energy_kwh"] == pytest.approx(m["energy_measured_kwh"])
    for r in history:
        assert float(r["epoch_energy_kwh"]) == pytest.approx(
            float(phases[f"train_epoch_{r['epoch']}"]["energy_consumed"])
        )


def test_cpu_time_attribution_charges_the_run_for_its_own_work():
    """A busy machine stretches the wall time and CodeCarbon's machine figure; the run's CPU seconds
    (and the RAM for the time it computed) are what it is charged for."""
    machine = energy.Phase(energy_kwh=3e-6, cpu_kwh=1e-6, ram_kwh=2e-6, gpu_kwh=0.0, emissions_kg=3e-8, duration_s=3.0)
    # 1 thread that computed 1 s of a 3 s phase: a 40 W CPU of 4 cores, 10 W a core
    own = energy.attributed(machine, cpu_s=1.0, machine_busy_s=4.0, threads=1, core_w=10.0)
    assert own.cpu_kwh == pytest.approx(10.0 / energy.KWH_TO_J)
    assert own.ram_kwh == pytest.approx(2e-6 / 3) and own.duration_s == 1.0
    assert own.energy_kwh == pytest.approx(own.cpu_kwh + own.ram_kwh)
    assert own.emissions_kg / own.energy_kwh == pytest.approx(machine.emissions_kg / machine.energy_kwh)
    # a counter (RAPL) measured the CPU: the run's share of the machine's busy CPU time
    metered = energy.attributed(machine, cpu_s=1.0, machine_busy_s=4.0, threads=1, core_w=None)
    assert metered.cpu_kwh == pytest.approx(1e-6 / 4)
    assert not energy.energy_unreliable("cpu_time", True, machine_busy=True, speed_unreliable=False, threads=1)
    assert energy.energy_unreliable("cpu_time", True, machine_busy=True, speed_unreliable=True, threads=2)
    assert energy.energy_unreliable("machine", True, machine_busy=True, speed_unreliable=False, threads=1)
    assert not energy.energy_unreliable("machine", False, machine_busy=True, speed_unreliable=True, threads=2)


def test_tensorboard_has_the_energy_of_every_epoch(energy_run):
    out, m, _ = energy_run
    events = EventAccumulator(str(out)).Reload()
    per_epoch = [float(r["epoch_energy_kwh"]) for r in rows(out / "history.csv")]
    assert [e.value for e in events.Scalars("energy/epoch_kwh")] == pytest.approx(per_epoch, rel=1e-6)
    assert events.Scalars("whole_run/energy_kwh")[-1].value == pytest.approx(m["energy_kwh"], rel=1e-6)
    start = events.PluginTagToContent("hparams")["_hparams_/experiment"]
    declared = {i.name.tag for i in plugin_data_pb2.HParamsPluginData.FromString(start).experiment.metric_infos}
    assert {"whole_run/energy_kwh", "whole_run/emissions_g_co2eq", "whole_run/peak_mem_mb"} <= declared


def test_no_lock_file_and_no_signal_handler_replaced(energy_run):
    _, _, handlers = energy_run
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers
    assert not Path(LOCKFILE).exists()


def test_codecarbon_says_nothing_on_a_normal_run(tmp_path, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    trained(make_cfg("dataset=digits", "epochs=1"), tmp_path)
    out, err = capfd.readouterr()
    assert [r for r in caplog.records if r.name.startswith("codecarbon")] == []
    assert "codecarbon" not in (out + err).lower()


@pytest.mark.slow
def test_a_command_line_run_prints_no_codecarbon_line(tmp_path):
    out = run_cli("train.py", "dataset=digits", "epochs=1", f"hydra.run.dir={tmp_path}")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "codecarbon" not in (out.stdout + out.stderr).lower()
    assert "(estimated)" in out.stdout or "(metered)" in out.stdout
    assert json.loads((tmp_path / "metrics.json").read_text())["energy_kwh"] > 0


def test_energy_off_runs_no_tracker_and_records_nulls(tmp_path):
    m = trained(make_cfg("dataset=digits", "epochs=2", "energy.track=false"), tmp_path)
    assert all(m[k] is None for k in (*ENERGY, "energy_method", "energy_kwh_per_point"))
    assert not list(tmp_path.glob("emissions*.csv"))
    assert all(r["epoch_energy_kwh"] == "" for r in rows(tmp_path / "history.csv"))
    assert "energy=n/a" in figures.summary_line(m) and "estimated" not in figures.summary_line(m)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("energy.country_iso_code=XYZ", "energy.country_iso_code='XYZ': is not a 3-letter ISO 3166 code"),
        ("energy.country_iso_code=fra", "energy.country_iso_code='fra'"),
        ("energy.tracking_mode=gpu", "energy.tracking_mode='gpu': must be one of machine, process"),
        ("energy.track=maybe", "energy.track='maybe': must be true or false"),
        ("energy.attribution=wall", "energy.attribution='wall': must be one of cpu_time, machine"),
    ],
)
def test_bad_energy_settings_are_one_line_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        validate(make_cfg(override, "device=cpu"))


def test_the_warm_up_starts_only_when_a_run_follows(monkeypatch):
    monkeypatch.setattr(energy, "_warm", None)
    for argv in (["--help"], ["--cfg", "job"], ["-m", "energy.track=false", "epochs=3"]):
        energy.warm_up_for(argv)
        assert energy._warm is None, argv
    energy.warm_up_for(["-m", "optimizer=sgd,adam"])
    assert energy._warm is not None
    energy._warm.join(timeout=60)
    assert not energy._warm.is_alive()


def test_the_report_shows_what_early_stopping_saved(tmp_path):
    """min_delta=10: nothing counts as an improvement, so patience 2 stops every run at epoch 3."""
    from expframe.report.summary import report

    metrics = {}
    for patience in ("null", "2"):
        for seed in (0, 1):
            run = tmp_path / "sweep" / f"p{patience}_s{seed}"
            metrics[patience, seed] = run_like_hydra(
                run,
                "dataset=digits",
                "epochs=6",
                "early_stopping.min_delta=10",
                f"early_stopping.patience={patience}",
                f"seed={seed}",
            )
    assert {m["epochs_run"] for (p, _), m in metrics.items() if p == "2"} == {3}
    md = report([tmp_path / "sweep"], tmp_path / "out")
    table = md.split("Early stopping against the same configuration without it")[1].strip().splitlines()
    (row,) = [line for line in table if line.startswith("| 2 |")]
    cells = [c.strip() for c in row.strip("|").split("|")]

    def mean(patience: str, key: str) -> float:
        return (metrics[patience, 0][key] + metrics[patience, 1][key]) / 2

    saved = 1 - mean("2", "energy_kwh") / mean("null", "energy_kwh")
    assert cells[:3] == ["2", "6.0 → 3.0", f"{mean('null', 'energy_kwh'):.3g} → {mean('2', 'energy_kwh'):.3g}"]
    assert cells[3] == f"{saved:.0%}" and saved > 0.2, "half the epochs: a large share of the energy"
    assert cells[5] == "2 / 2"
    assert "energy: estimated by CodeCarbon's model" in md and "gCO2eq/kWh" in md
    assert "% energy: estimated" in (tmp_path / "out" / "summary.tex").read_text()
    assert (tmp_path / "out" / "figures" / "accuracy_vs_energy.png").stat().st_size > 10_000


def test_a_ctrl_c_inside_a_codecarbon_call_waits_for_the_call_to_return():
    """CodeCarbon holds a lock across its calls: interrupting one mid-way would hang the next."""
    before = signal.getsignal(signal.SIGINT)
    finished = []
    with pytest.raises(KeyboardInterrupt):
        with energy.interrupts_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            finished.append(True)
    assert finished == [True] and signal.getsignal(signal.SIGINT) is before
