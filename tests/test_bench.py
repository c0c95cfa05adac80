"""The benchmark runs at tiny size, so it cannot rot; at full size it is `python -m expframe.bench`."""

import re

from tests.conftest import run_cli


def test_benchmark_runs_and_prints_its_ratios():
    out = run_cli("-m", "expframe.bench", "--samples", "4000", "--epochs", "2", "--repeats", "1", "--sweep-jobs", "2")
    assert out.returncode == 0, out.stderr[-3000:]
    rows = {
        line.split()[0]: line.split()[1:] for line in out.stdout.splitlines() if line.startswith(("a_", "b_", "c_"))
    }
    assert set(rows) == {"a_tp_reference", "b_expframe", "c_floor"}
    for name, (epoch_s, _, acc, _) in rows.items():
        assert float(epoch_s) > 0 and float(acc) > 0.5, name
    b_over_a = float(re.search(r"b/a = ([\d.]+)", out.stdout).group(1))
    assert b_over_a < 1.0, "expframe must beat the TP's per-sample PIL loop"
    assert re.search(r"start-up .*: [\d.]+ s", out.stdout)
    assert re.search(r"per-job fixed cost [\d.]+ s", out.stdout)
