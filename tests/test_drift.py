"""The drift detectors against independent computations (scipy's KS, a direct numpy MMD²) and on
data that did and did not move."""

import contextlib

import numpy as np
import pytest
import torch
from scipy.stats import ks_2samp

from expframe.measure.drift import ALPHA, ks, mmd


def softmax_like(n: int, shift: float, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(n, 10, generator=gen) + shift * torch.arange(10)).softmax(1)


def test_ks_is_scipys_per_output_with_bonferroni():
    ref, new = softmax_like(300, 0.0, 0), softmax_like(200, 0.05, 1)
    verdict = ks(ref, new)
    expected = [ks_2samp(ref[:, j].double().numpy(), new[:, j].double().numpy()) for j in range(10)]
    assert verdict.p_value == min(t.pvalue for t in expected)
    assert verdict.statistic == max(t.statistic for t in expected)
    assert verdict.threshold == ALPHA / 10 and verdict.drift == (verdict.p_value < ALPHA / 10)


def direct_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Gretton et al.'s unbiased MMD² written out with numpy, alibi-detect's bandwidth."""
    d = lambda a, b: ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)  # noqa: E731
    cross = np.sort(d(x, y).ravel())
    lower_median = cross[(len(cross) - 1) // 2]  # alibi-detect's (and torch's) median of an even count
    k = lambda a, b: np.exp(-d(a, b) / lower_median)  # noqa: E731
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    n, m = len(x), len(y)
    return (kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean()


def test_mmd_statistic_is_the_direct_computation():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(80, 16, generator=gen), torch.randn(60, 16, generator=gen) + 0.3
    verdict = mmd(x, y, permutations=20, generator=torch.Generator().manual_seed(1))
    assert verdict.statistic == pytest.approx(direct_mmd2(x.double().numpy(), y.double().numpy()), rel=1e-9)


def test_mmd_sees_a_moved_embedding_and_alarms_at_its_nominal_rate_on_resamples():
    """Over pairs of samples of one distribution the permutation test alarms at its level (a fixed
    reference's own draw moves the rate it sees: that is the benchmark's calibration)."""
    gen = torch.Generator().manual_seed(0)
    perm = torch.Generator().manual_seed(2)
    draws = [
        mmd(torch.randn(100, 16, generator=gen), torch.randn(100, 16, generator=gen), generator=perm) for _ in range(40)
    ]
    assert sum(v.drift for v in draws) <= 5, "40 pairs at p = 0.05: P(6 or more false alarms) is 1.4%"
    moved = mmd(torch.randn(100, 16, generator=gen), torch.randn(100, 16, generator=gen) + 0.5, generator=perm)
    assert moved.drift and moved.p_value == 1 / 101, "no permutation reaches a real shift"


def test_features_are_the_softmax_and_the_heads_inputs():
    from expframe.measure.features import features

    torch.manual_seed(0)
    body = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 12), torch.nn.ReLU())
    head = torch.nn.Linear(12, 10)
    model = torch.nn.Sequential(body, head)
    x = torch.randn(3000, 1, 8, 8)
    got = features(model, x, contextlib.nullcontext())
    with torch.inference_mode():
        assert torch.allclose(got.embedding, body(x)) and torch.allclose(got.softmax, head(body(x)).softmax(1))
    assert len(got) == 3000 and len(got.window(100, 300)) == 200 and not model.training


def test_a_stream_is_scored_window_by_window_and_a_shift_is_seen():
    from expframe.measure.drift import window_rows
    from expframe.measure.features import Features

    gen = torch.Generator().manual_seed(0)
    reference = Features(softmax_like(400, 0.0, 1), torch.randn(400, 8, generator=gen))
    clean = Features(softmax_like(250, 0.0, 2), torch.randn(250, 8, generator=gen))
    moved = Features(softmax_like(250, 0.3, 3), torch.randn(250, 8, generator=gen) + 1.0)
    labels = torch.zeros(250, dtype=torch.long)
    rows = list(window_rows(reference, moved, 100, labels, generator=torch.Generator().manual_seed(4)))
    assert [r["n"] for r in rows] == [100, 100, 50] and [r["window"] for r in rows] == [0, 1, 2]
    assert all(r["ks_drift"] and r["mmd_drift"] for r in rows)
    assert all(abs(sum(r[f"share_{c}"] for c in range(10)) - 1) < 1e-9 for r in rows)
    quiet = list(window_rows(reference, clean, 250, generator=torch.Generator().manual_seed(5)))
    assert len(quiet) == 1 and "accuracy" not in quiet[0] and not quiet[0]["mmd_drift"]


def test_the_alert_holds_its_level_over_the_detectors_watching():
    """Bonferroni over the detectors: p = 0.03 is each detector's drift at 0.05, but not the alert of
    two (0.03 >= 0.05 / 2); alone, it is."""
    from expframe.measure.drift import Verdict, alert

    mmd_alone = Verdict("mmd", 0.1, 0.03, ALPHA, True)
    ks_quiet = Verdict("ks", 0.1, 0.5, ALPHA / 10, False)
    assert alert([mmd_alone]) and not alert([mmd_alone, ks_quiet])
    assert alert([Verdict("mmd", 0.1, 0.02, ALPHA, True), ks_quiet])
    assert alert([Verdict("ks", 0.3, 0.002, ALPHA / 10, True), Verdict("mmd", 0.0, 0.9, ALPHA, False)])
