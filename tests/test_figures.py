"""The figure table: one declaration reaches history.csv, metrics.json, TensorBoard, HParams, the
objectives, the report and the summary line."""

import csv
import json

import pytest
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from expframe.config.validate import validate
from expframe.errors import ConfigError
from expframe.record import catalogue as figures
from expframe.record.catalogue import Figure
from expframe.report.summary import report
from tests.conftest import make_cfg, trained

GAP = Figure(
    "loss_gap",
    "validation minus training loss",
    higher_is_better=False,
    per_epoch=True,
    derive=lambda row: row["val_loss"] - row["train_loss"],
    tag="loss/gap",
    summary="last",
    hparam=True,
    objective=True,
    report=True,
    line="gap",
)


@pytest.fixture
def with_gap(monkeypatch):
    monkeypatch.setattr(figures, "FIGURES", (*figures.FIGURES, GAP))


def test_a_figure_declared_once_is_recorded_everywhere(with_gap, tmp_path):
    validate(make_cfg("objective=loss_gap", "device=cpu"))
    run_dir = tmp_path / "run"
    cfg = make_cfg("dataset=digits", "epochs=3", "optimizer=adam", "logging.tensorboard=true")
    m = trained(cfg, run_dir)
    (run_dir / ".hydra").mkdir()
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")  # what Hydra keeps beside a run
    rows = list(csv.DictReader((run_dir / "history.csv").open()))
    gaps = [float(r["val_loss"]) - float(r["train_loss"]) for r in rows]
    assert [float(r["loss_gap"]) for r in rows] == pytest.approx(gaps)
    assert json.loads((run_dir / "metrics.json").read_text())["loss_gap"] == pytest.approx(gaps[-1])
    events = EventAccumulator(str(run_dir)).Reload()
    assert [e.value for e in events.Scalars("loss/gap")] == pytest.approx(gaps)
    assert events.Scalars("whole_run/loss_gap")[-1].value == pytest.approx(gaps[-1])
    start = events.PluginTagToContent("hparams")["_hparams_/experiment"]
    declared = plugin_data_pb2.HParamsPluginData.FromString(start).experiment.metric_infos
    assert "whole_run/loss_gap" in {info.name.tag for info in declared}
    assert f"gap={gaps[-1]:.4f}" in figures.summary_line(m)
    table = report([run_dir], tmp_path / "out", plots=False)
    assert "loss_gap" in table.splitlines()[0]


def test_an_undeclared_objective_is_refused_with_the_allowed_names():
    with pytest.raises(ConfigError, match="objective='loss_gap': must be one of val_acc, test_acc"):
        validate(make_cfg("objective=loss_gap", "device=cpu"))


def test_a_declared_figure_that_nothing_computes_fails_loudly(monkeypatch):
    monkeypatch.setattr(figures, "FIGURES", (*figures.FIGURES, Figure("f1", "F1 score", per_epoch=True)))
    with pytest.raises(KeyError, match="f1"):
        figures.history_row({"epoch": 1, **{f.name: 0.0 for f in figures.per_epoch() if f.name != "f1"}})


def test_summaries_take_the_last_the_best_or_the_runs_value():
    history = [
        {"epoch": 1, "val_acc": 0.5, "val_loss": 1.0, "train_loss": 2.0},
        {"epoch": 2, "val_acc": 0.8, "val_loss": 0.7, "train_loss": 1.0},
        {"epoch": 3, "val_acc": 0.7, "val_loss": 0.9, "train_loss": 0.5},
    ]
    computed = {f.name: 1.0 for f in figures.in_summary() if f.summary == "run"}
    computed.update(peak_cuda_mem_bytes=None, train_mem_bytes=3 * figures.MB)
    out = figures.summarise(history, computed)
    assert (out["val_acc"], out["best_val_acc"], out["final_val_loss"], out["final_train_loss"]) == (0.7, 0.8, 0.9, 0.5)
    assert out["peak_mem_mb"] == 3.0 and out["n_params"] == 1.0
    assert set(out) == set(figures.names(figures.in_summary()))
    assert figures.summarise([], computed)["val_acc"] is None, "a run stopped before its first epoch"


def test_directions_and_the_failure_schema():
    assert figures.figure("epoch_time_s").better(0.1, 0.2) and figures.figure("val_acc").better(0.9, 0.8)
    assert all(f.higher_is_better is not None for f in figures.FIGURES if f.objective), "an objective has a direction"
    empty = figures.empty_summary()
    assert set(empty) == set(figures.names(figures.in_summary())) and all(v is None for v in empty.values())
    line = figures.summary_line({"status": "failed", **empty})
    assert line.startswith("failed: val_acc=n/a test_acc=n/a epoch=n/a")


def test_every_tag_and_name_is_unique():
    names = [f.name for f in figures.FIGURES]
    tags = [f.tag for f in figures.FIGURES if f.tag]
    assert len(set(names)) == len(names) and len(set(tags)) == len(tags)
    assert all(f.source is None or figures.figure(f.source).per_epoch for f in figures.FIGURES)
    assert figures.format_value(figures.figure("epoch_time_s"), 0.0234) == "0.0234s"
    assert figures.format_value(figures.figure("samples_per_s"), 154455.2) == "154,455"
