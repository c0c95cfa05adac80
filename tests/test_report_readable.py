"""The report reads well and never says more than its runs hold: no main effects from single runs, a
plain line where nothing varies, flagged values never bolded, figures sized to what they show."""

import json

import pytest
from PIL import Image

from expframe.report import summary
from expframe.report.statistics import Delta
from expframe.report.summary import report, short_label, wrapped, write_forest
from tests.test_ablation import write_runs

SPEEDS = {"sgd": [0.10, 0.11, 0.10], "adam": [0.05, 0.06, 0.05], "rmsprop": [0.20, 0.21, 0.20]}


def test_single_runs_get_no_main_effects_or_interactions(tmp_path):
    runs = [
        {"optimizer": o, "activation": a, "seed": 0, "test_acc": v}
        for (o, a), v in {
            ("sgd", "relu"): 0.8,
            ("sgd", "tanh"): 0.7,
            ("adam", "relu"): 0.9,
            ("adam", "tanh"): 0.95,
        }.items()
    ]
    write_runs(tmp_path / "s", runs)
    md = report(
        [tmp_path / "s"],
        tmp_path / "out",
        metrics=["test_acc"],
        plots=False,
        baseline={"optimizer": "sgd", "activation": "relu"},
    )
    assert "main effect of" not in md and "interaction:" not in md
    assert "No main effects or interactions: each configuration ran once (n=1)" in md


def test_runs_that_differ_only_by_seed_say_so(tmp_path):
    write_runs(tmp_path / "s", [{"seed": s, "test_acc": 0.9 + s / 100} for s in range(3)])
    md = report([tmp_path / "s"], tmp_path / "out", metrics=["test_acc"], plots=False)
    assert "nothing differs between these runs (one configuration)" in md
    assert "configuration(s) with ;" not in md


def test_a_value_left_out_as_unreliable_is_never_bolded(tmp_path):
    """adam's fastest epochs came from runs whose speed could not hold: sgd's is the bold one."""
    runs = []
    for optimizer, times in SPEEDS.items():
        for seed, t in enumerate(times):
            flagged = optimizer == "adam"  # every adam run's timing could not hold
            runs.append(
                {"optimizer": optimizer, "seed": seed, "test_acc": 0.9, "epoch_time_s": t, "speed_unreliable": flagged}
            )
    write_runs(tmp_path / "s", runs)
    md = report(
        [tmp_path / "s"],
        tmp_path / "out",
        metrics=["test_acc", "epoch_time_s"],
        plots=False,
        baseline={"optimizer": "sgd"},
    )
    tex = (tmp_path / "out" / "best.tex").read_text()
    lines = {line.split(" & ")[0]: line for line in tex.splitlines() if " & " in line}
    assert "textbf" not in lines["adam"] and "\\textbf{0.1033}" in lines["sgd"]
    assert "Left out as unreliable" in md and "3 run(s) of epoch_time_s" in md
    table = json.dumps(md)
    assert "0.0533" not in table, "adam's flagged mean is in no table"


def test_numbers_labels_and_optuna_values_read_well(tmp_path):
    long = {f"key_number_{i}": f"value_{i}" for i in range(6)}
    label = short_label(long, list(long))
    assert all(len(line) <= summary.LABEL_WIDTH for line in label.split("\n")) and label.count("=") == 6
    assert "..." not in label and wrapped(["a=1", "b=2"]) == "a=1, b=2"
    (tmp_path / "optimization_results.yaml").write_text(
        "name: optuna\nbest_params:\n  optimizer.lr: 0.012345678901234567\nbest_value: 0.9123456789012345\n"
    )
    import pandas as pd

    runs = pd.DataFrame({"status": ["ok"], "optimizer.lr": ["0.012345678901234567"], "trial": ["3"]})
    (line,) = summary.optuna_best([tmp_path], runs)
    assert "optimizer.lr=0.0123" in line and "value 0.9123" in line and "0.01234567" not in line


def _delta(config: tuple, delta: float | None, left_out: int = 0) -> Delta:
    row = Delta(config, "test_acc", 3, 0.9)
    row.left_out = left_out
    if delta is not None:
        row.delta, row.low, row.high = delta, delta - 0.01, delta + 0.01
    return row


def test_the_forest_plot_is_sized_to_its_panels_and_says_why_a_panel_is_empty(tmp_path, monkeypatch):
    notes = []
    monkeypatch.setattr(summary, "empty_panel_note", lambda rows: notes.append(rows) or "why")
    configs = [("sgd",), ("adam",), ("rmsprop",)]
    results = {
        "test_acc": [_delta(configs[0], None), _delta(configs[1], 0.05), _delta(configs[2], -0.01)],
        "epoch_time_s": [_delta(c, None, left_out=3 if c != ("sgd",) else 0) for c in configs],
    }
    path = write_forest(results, ["optimizer"], tmp_path / "deltas.png")
    width, height = Image.open(path).size
    assert len(notes) == 1, "the empty panel says why"
    assert width < 1000 and height < 400, "two panels, two rows: no 1848-pixel strip"
    assert summary.empty_panel_note.__name__ == "<lambda>"
    monkeypatch.undo()
    assert "left out" in summary.empty_panel_note(results["epoch_time_s"])
    assert "fewer than 2 seeds" in summary.empty_panel_note([_delta(configs[0], None)])


def test_no_legend_entry_for_a_front_that_is_not_drawn(tmp_path, monkeypatch):
    import pandas as pd

    kept = []
    monkeypatch.setattr(summary, "_save", lambda fig, path, plt: kept.append(fig) or path)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    one = pd.DataFrame({"variant": ["a", "a"], "epoch_time_s": [0.1, 0.12], "val_acc": [0.9, 0.91]})
    summary._tradeoff(one, "epoch_time_s", "val_acc", tmp_path / "p.png", plt, sns)
    two = pd.DataFrame({"variant": ["a", "b"], "epoch_time_s": [0.1, 0.2], "val_acc": [0.8, 0.9]})
    summary._tradeoff(two, "epoch_time_s", "val_acc", tmp_path / "q.png", plt, sns)
    legends = [[t.get_text() for t in fig.axes[0].get_legend().get_texts()] for fig in kept]
    assert not any("Pareto" in t for t in legends[0]) and any("Pareto" in t for t in legends[1])
    for fig in kept:
        plt.close(fig)


@pytest.mark.parametrize("flag", ["speed_unreliable", "timing_contended"])
def test_flagged_and_legacy_runs_are_left_out_of_the_figures_data(tmp_path, flag):
    runs = [{"optimizer": "sgd", "seed": s, "test_acc": 0.9, "epoch_time_s": 0.1 + s, flag: s == 2} for s in range(3)]
    write_runs(tmp_path / "s", runs)
    df = summary.reliable_values(summary.runs_table(summary.find_runs([tmp_path / "s"])[0]))
    assert df["epoch_time_s"].isna().sum() == 1 and df["test_acc"].notna().all()
