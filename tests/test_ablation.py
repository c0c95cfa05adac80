"""The ablation table's statistics on run folders with known numbers, checked against scipy."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from expframe.report.format import number
from expframe.report.statistics import holm, seeds_needed
from expframe.report.summary import report
from tests.test_report import report_rows


def write_runs(root: Path, runs: list[dict]) -> None:
    for i, run in enumerate(runs):
        job = root / f"{i}_run"
        (job / ".hydra").mkdir(parents=True)
        record = {"status": "ok", "error": None, "test_acc": None, **run}
        record["swept"] = {k: run[k] for k in ("optimizer", "activation") if k in run} | {"seed": run["seed"]}
        (job / "metrics.json").write_text(json.dumps(record))


SGD = [0.80, 0.82, 0.81, 0.79, 0.83]
ADAM = [0.90, 0.91, 0.93, 0.90, 0.92]  # clearly better
RMS = [0.81, 0.80, 0.83, 0.80, 0.82]  # inside the noise


def grid(tmp_path: Path, seeds_of_rmsprop=range(5)) -> str:
    runs = [{"optimizer": "sgd", "seed": s, "test_acc": v} for s, v in enumerate(SGD)]
    runs += [{"optimizer": "adam", "seed": s, "test_acc": v} for s, v in enumerate(ADAM)]
    runs += [{"optimizer": "rmsprop", "seed": s, "test_acc": RMS[i]} for i, s in enumerate(seeds_of_rmsprop)]
    runs += [
        {"optimizer": "adam", "seed": 7, "status": "failed"},
        {"optimizer": "sgd", "seed": 8, "status": "diverged"},
    ]
    write_runs(tmp_path / "s", runs)
    return report([tmp_path / "s"], tmp_path / "out", metrics=["test_acc"], plots=False)


def ablation_rows(md: str) -> dict[str, dict]:
    section = md.split("Against the baseline", 1)[1]
    rows = report_rows(section.split("\n\n", 1)[1])
    return {r[0]: dict(zip(rows[0], r, strict=True)) for r in rows[1:]}


def test_paired_intervals_holm_and_verdicts_equal_scipys(tmp_path):
    md = grid(tmp_path)
    rows = ablation_rows(md)
    assert "baseline (optimizer=sgd)" in md and rows["sgd"]["Δ test_acc [95%]"] == "baseline"
    paired = {name: stats.ttest_rel(values, SGD) for name, values in (("adam", ADAM), ("rmsprop", RMS))}
    adjusted = holm([paired["adam"].pvalue, paired["rmsprop"].pvalue])
    deltas = pd.read_csv(tmp_path / "out" / "deltas.csv")
    for (name, result), p_holm in zip(paired.items(), adjusted, strict=True):
        got = deltas[deltas["optimizer"] == name].iloc[0]
        interval = result.confidence_interval(0.95)
        assert (got["low"], got["high"], got["p"]) == pytest.approx((interval.low, interval.high, result.pvalue))
        assert got["p_holm"] == pytest.approx(p_holm) and got["test"] == "paired"
    assert rows["adam"]["Δ test_acc [95%]"].endswith("P: better")
    assert rows["rmsprop"]["Δ test_acc [95%]"].endswith("P: no detectable difference")
    assert (rows["adam"]["failed"], rows["sgd"]["diverged"], rows["adam"]["n"]) == ("1", "1", "5")


def test_welch_when_the_seeds_differ(tmp_path):
    grid(tmp_path, seeds_of_rmsprop=range(10, 15))
    got = pd.read_csv(tmp_path / "out" / "deltas.csv").query("optimizer == 'rmsprop'").iloc[0]
    welch = stats.ttest_ind(RMS, SGD, equal_var=False)
    assert got["test"] == "Welch" and got["p"] == pytest.approx(welch.pvalue)
    assert (got["low"], got["high"]) == pytest.approx(tuple(welch.confidence_interval(0.95)))


def test_holm_by_hand():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0]), "monotone: never below a smaller p's"


def test_one_seed_has_no_interval_and_no_verdict(tmp_path):
    write_runs(
        tmp_path / "s",
        [{"optimizer": "sgd", "seed": s, "test_acc": v} for s, v in enumerate(SGD)]
        + [{"optimizer": "adam", "seed": 0, "test_acc": 0.95}],
    )
    md = report([tmp_path / "s"], tmp_path / "out", metrics=["test_acc"], plots=False)
    assert ablation_rows(md)["adam"]["Δ test_acc [95%]"] == "1 seed"


def test_no_baseline_in_the_sweep_is_one_line(tmp_path):
    write_runs(
        tmp_path / "s",
        [{"optimizer": o, "seed": s, "test_acc": 0.5 + s / 100} for o in ("adam", "rmsprop") for s in range(2)],
    )
    md = report([tmp_path / "s"], tmp_path / "out", metrics=["test_acc"], plots=False)
    assert "no baseline: no configuration(s) with optimizer=sgd; use --baseline" in md
    md = report([tmp_path / "s"], tmp_path / "out", metrics=["test_acc"], plots=False, baseline={"optimizer": "adam"})
    assert "Against the baseline (optimizer=adam)" in md


def test_seeds_needed_against_a_simulation():
    """The noncentral-t answer, checked by simulating two-sample t-tests at that many seeds."""
    sd, difference = 0.01, 0.01
    n = seeds_needed(sd, difference)
    z = stats.norm.ppf(0.975) + stats.norm.ppf(0.8)
    assert 2 * (z * sd / difference) ** 2 <= n <= 2 * (z * sd / difference) ** 2 + 2, "the normal approximation, +t"
    rng = np.random.default_rng(0)

    def power(k: int) -> float:
        a = rng.normal(0, sd, (20000, k))
        b = rng.normal(difference, sd, (20000, k))
        return float(np.mean(stats.ttest_ind(a, b, axis=1).pvalue < 0.05))

    assert power(n) >= 0.79 and power(n - 1) < 0.81


def test_main_effects_of_a_two_by_two_grid(tmp_path):
    cells = {
        ("sgd", "relu"): [0.80, 0.82],
        ("sgd", "tanh"): [0.70, 0.72],
        ("adam", "relu"): [0.90, 0.92],
        ("adam", "tanh"): [0.95, 0.97],
    }
    runs = [
        {"optimizer": o, "activation": a, "seed": s, "test_acc": v}
        for (o, a), values in cells.items()
        for s, v in enumerate(values)
    ]
    write_runs(tmp_path / "s", runs)
    md = report([tmp_path / "s"], tmp_path / "out", metrics=["test_acc"], plots=False)
    adam = np.mean(cells[("adam", "relu")] + cells[("adam", "tanh")])
    sgd = np.mean(cells[("sgd", "relu")] + cells[("sgd", "tanh")])
    line = next(line for line in md.splitlines() if line.startswith("main effect of optimizer"))
    assert (sgd, adam) == pytest.approx((0.76, 0.935))
    # each value to 4 significant digits, trailing zeros dropped
    assert "sgd 0.76;" in line and "adam 0.935;" in line and "adam - sgd = +0.175 [" in line
    assert "interaction: the effect of activation on test_acc changes sign with optimizer" in md


def test_the_tex_table_bolds_the_best_and_marks_the_ties(tmp_path):
    grid(tmp_path)
    tex = (tmp_path / "out" / "best.tex").read_text()
    lines = {line.split(" & ")[0]: line for line in tex.splitlines() if " & " in line}
    assert f"\\textbf{{{number(np.mean(ADAM))}}}" in lines["adam"]
    assert "dagger" not in lines["sgd"] and "dagger" not in lines["rmsprop"], "both clearly below adam"
    assert "\\toprule" in tex and "not detectably different" in tex
