"""One quantity, one name, one value: the summary line, metrics.json, history.csv, TensorBoard (read
with its own reader) and the report agree on a real sweep; HParams opens on the practical's figures."""

import csv
import json
import re

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from expframe import named_folder
from expframe.record import catalogue as figures
from expframe.report.summary import report
from tests.conftest import run_cli, run_train_in_process


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("one_value")
    out = run_cli(
        "train.py", "-m", "model=mlp,cnn", "dataset=digits", "epochs=2", "report.auto=false", f"hydra.sweep.dir={root}"
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return root


def jobs(root):
    return sorted(p for p in root.iterdir() if (p / "metrics.json").exists())


def line_value(log: str, name: str) -> float:
    """The summary line's `name=<value><unit>`, as a number."""
    return float(re.search(rf" {name}=([0-9.,e+-]+)", log).group(1).replace(",", ""))


def test_every_view_shows_the_same_value_under_the_same_name(sweep, tmp_path):
    report([sweep], tmp_path / "report", plots=False)
    table = {row["run_dir"]: row for row in csv.DictReader(open(tmp_path / "report" / "summary.csv"))}
    for job in jobs(sweep):
        m = json.loads((job / "metrics.json").read_text())
        history = list(csv.DictReader(open(job / "history.csv")))
        events = EventAccumulator(str(job), size_guidance={"scalars": 0}).Reload()
        log = (job / "train.log").read_text()
        row = next(r for d, r in table.items() if d.endswith(job.name))
        # robust epoch time: per epoch in history.csv and TensorBoard, the run's in metrics, line, report
        assert [e.value for e in events.Scalars("time/epoch_s")] == pytest.approx(
            [float(r["epoch_time_s"]) for r in history], rel=1e-6
        )
        assert [e.value for e in events.Scalars("time/epoch_wall_s")] == pytest.approx(
            [float(r["epoch_wall_s"]) for r in history], rel=1e-6
        )
        assert events.Scalars("whole_run/epoch_time_s")[-1].value == pytest.approx(m["epoch_time_s"], rel=1e-6)
        assert line_value(log, "epoch") == pytest.approx(m["epoch_time_s"], rel=5e-3)
        assert float(row["epoch_time_s"]) == pytest.approx(m["epoch_time_s"])
        # tensor memory and process RSS: two quantities, two names, never one under the other's name
        assert events.Scalars("whole_run/peak_mem_mb")[-1].value == pytest.approx(m["peak_mem_mb"], rel=1e-6)
        assert line_value(log, "train_mem") == pytest.approx(m["peak_mem_mb"], rel=5e-3)
        assert float(row["peak_mem_mb"]) == pytest.approx(m["peak_mem_mb"])
        rss = events.Scalars("memory/process_rss_peak_mb")
        assert rss[-1].value == pytest.approx(float(history[-1]["peak_rss_mb"]), rel=1e-6)
        # per epoch: the peak so far; the run's: its peak through the test evaluation
        assert m["peak_rss_mb"] >= float(history[-1]["peak_rss_mb"])
        assert line_value(log, "rss") == pytest.approx(m["peak_rss_mb"], abs=0.5)
        assert m["peak_rss_mb"] > 20 * m["peak_mem_mb"], "the process holds far more than training's tensors"
        # energy: the run's attributed figure everywhere
        assert events.Scalars("whole_run/energy_kwh")[-1].value == pytest.approx(m["energy_kwh"], rel=1e-6)
        assert line_value(log, "energy") == pytest.approx(m["energy_kwh"], rel=5e-3)
        assert float(row["energy_kwh"]) == pytest.approx(m["energy_kwh"])
    assert figures.figure("peak_mem_mb").label != figures.figure("peak_rss_mb").label
    assert "tensors" in figures.figure("peak_mem_mb").label and "RSS" in figures.figure("peak_rss_mb").label
    labels = [f.heading for f in figures.FIGURES]  # a quantity in MB and in bytes: two units
    assert len(set(labels)) == len(labels), "one label per quantity"


def test_hparams_opens_on_accuracy_epoch_time_peak_memory_and_energy(sweep):
    job = jobs(sweep)[0]
    events = EventAccumulator(str(job)).Reload()
    content = events.PluginTagToContent("hparams")
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    metrics = [i.name.tag for i in experiment.metric_infos]
    assert metrics[:4] == [f"whole_run/{k}" for k in ("test_acc", "epoch_time_s", "peak_mem_mb", "energy_kwh")]
    start = content["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(start).session_start_info.hparams
    recorded = json.loads((job / "metrics.json").read_text())
    # every group's choice, not only the swept one: a digits MLP and a digits CNN differ on `model`
    for group in ("dataset", "model", "optimizer", "activation", "precision", "scheduler"):
        assert hparams[group].string_value == recorded["choices"][group], group
    assert {"machine_busy", "speed_unreliable", "energy_unreliable"} <= set(hparams)


def test_a_single_run_is_named_by_what_differs_from_the_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # runs/ is relative to the working directory
    out = run_train_in_process("model=cnn", "dataset=digits", "epochs=1", "optimizer.lr=0.05")
    assert out.returncode == 0, out.stderr[-2000:]
    (run,) = (tmp_path / "runs").glob("*/*")
    assert run.name.endswith("_dataset=digits,epochs=1,model=cnn,optimizer.lr=0.05")
    events = EventAccumulator(str(run), size_guidance={"images": 0}).Reload()
    image = events.Images("confusion/test")[-1]
    # ten classes of 34-pixel cells, plus the class names on the left and on top
    assert image.width > 10 * 34 and image.height > 10 * 34
    assert named_folder("12-00-00-000001", "") == "12-00-00-000001", "no override: the time stamp alone"
    assert "/" not in named_folder("12-00-00-000001", "dataset.root=../../x"), "never a folder outside runs/"
