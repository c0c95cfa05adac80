"""Drift detectors: has the data a trained model now meets moved away from the data it was checked on?

Each detector takes the reference features (the run's own validation split: never data the model
trained on) and a window of new features, and returns the same `Verdict` (statistic, p-value, the
threshold the p-value is compared with, drift or not), as Rabanser et al.'s "Failing Loudly"
(NeurIPS 2019) and alibi-detect frame them:

- `ks`: BBSD, a two-sample Kolmogorov-Smirnov test (scipy.stats.ks_2samp) on each softmax output
  dimension, Bonferroni over the dimensions (alibi-detect's KSDrift: p = 0.05 / dimensions);
- `mmd`: the squared maximum mean discrepancy between the penultimate-layer embeddings (unbiased
  estimate), a Gaussian kernel with alibi-detect's median-heuristic bandwidth, its p-value by
  permutation (alibi-detect's MMDDrift: 100 permutations), computed in torch on the features' device.
"""

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from expframe.measure.features import Features

ALPHA = 0.05


@dataclass(frozen=True)
class Verdict:
    detector: str
    statistic: float
    p_value: float
    # the p-value below which the window drifted (alpha, after Bonferroni where it applies)
    threshold: float
    drift: bool


def ks(reference: torch.Tensor, new: torch.Tensor, alpha: float = ALPHA) -> Verdict:
    """BBSD: KS on each of the k softmax outputs; drift when the smallest p-value < alpha / k. The
    statistic is the largest KS distance, the p-value the smallest one (not multiplied: the threshold is)."""
    from scipy.stats import ks_2samp

    ref, cur = reference.double().cpu().numpy(), new.double().cpu().numpy()
    tests = [ks_2samp(ref[:, j], cur[:, j]) for j in range(ref.shape[1])]
    threshold = alpha / len(tests)
    p_value = min(float(t.pvalue) for t in tests)
    return Verdict("ks", max(float(t.statistic) for t in tests), p_value, threshold, p_value < threshold)


def mmd2(kernel: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
    """Unbiased MMD² between the rows marked in each row of `first` (P, N; 1 = the first sample) and
    the others, from their pooled kernel matrix (N, N): one matrix product for every split at once,
    so 100 permutations of a 1,000-sample window cost one (N, N) x (N, P) product, not 100 gathers."""
    a = first.to(kernel.dtype)
    n, m = a.sum(1), (1 - a).sum(1)
    ka = kernel @ a.T
    row_sums, diagonal = kernel.sum(1), kernel.diagonal()
    aka, ak1 = (a.T * ka).sum(0), a @ row_sums
    bkb = kernel.sum() - 2 * ak1 + aka
    xx = (aka - a @ diagonal) / (n * (n - 1))
    yy = (bkb - (1 - a) @ diagonal) / (m * (m - 1))
    return xx + yy - 2 * (ak1 - aka) / (n * m)


def mmd(
    reference: torch.Tensor,
    new: torch.Tensor,
    permutations: int = 100,
    alpha: float = ALPHA,
    generator: torch.Generator | None = None,
) -> Verdict:
    """MMD² with a Gaussian kernel (median-heuristic bandwidth on the pooled features), p-value by
    permutation: (1 + permutations whose MMD² >= the observed one) / (1 + permutations), so it is
    never 0; its Monte-Carlo standard error is sqrt(p (1 - p) / permutations)."""
    pooled = torch.cat([reference, new]).double()
    squared = torch.cdist(pooled, pooled).square()
    # alibi-detect's median heuristic, on the reference x new block of the same distances: sigma² is
    # half their median, so the kernel exp(-d² / (2 sigma²)) is exp(-d² / that median)
    sigma2 = float(squared[: len(reference), len(reference) :].median().clamp_min(1e-12)) / 2
    kernel = torch.exp(-squared / (2 * sigma2))
    observed_split = (torch.arange(len(pooled), device=pooled.device) < len(reference)).unsqueeze(0)
    observed = mmd2(kernel, observed_split)[0]
    orders = torch.stack([torch.randperm(len(pooled), generator=generator) for _ in range(permutations)])
    permuted = mmd2(kernel, observed_split[0][orders.to(pooled.device)])
    p_value = (1 + int((permuted >= observed).sum())) / (1 + permutations)
    return Verdict("mmd", float(observed), p_value, alpha, p_value < alpha)


# each detector as the monitor calls it: (reference features, new features) -> Verdict; BBSD reads
# the softmax outputs, the MMD the embeddings
DETECTORS: dict[str, Callable[..., Verdict]] = {
    "ks": lambda ref, new, **_: ks(ref.softmax, new.softmax),
    "mmd": lambda ref, new, permutations, generator: mmd(
        ref.embedding, new.embedding, permutations, generator=generator
    ),
}


def alert(verdicts: Sequence[Verdict]) -> bool:
    """The family's decision: a detector alerts when its p-value is under its threshold divided by the
    number of detectors asked (Bonferroni), so the alert's false alarm rate stays at most alpha however
    many detectors watch; each detector's own verdict stays at its own threshold."""
    return any(v.p_value < v.threshold / len(verdicts) for v in verdicts)


def window_rows(
    reference: Features,
    new: Features,
    window: int,
    labels: torch.Tensor | None = None,
    detectors: Sequence[str] = ("ks", "mmd"),
    permutations: int = 100,
    generator: torch.Generator | None = None,
) -> Iterator[dict]:
    """One row per window of `window` new samples, in order (a stream): n, mean confidence, the
    predicted-class shares, accuracy when labels exist, each detector's statistic, p-value,
    threshold and verdict, and the alert (`alert`). The last, shorter window is scored too when it
    holds at least 2 samples."""
    classes = reference.softmax.shape[1]
    for number, start in enumerate(range(0, len(new), window)):
        part = new.window(start, start + window)
        if len(part) < 2:
            break
        predicted = part.softmax.argmax(1)
        row: dict = {"window": number, "n": len(part), "confidence": float(part.softmax.max(1).values.mean())}
        shares = torch.bincount(predicted, minlength=classes).double() / len(part)
        row.update({f"share_{c}": float(shares[c]) for c in range(classes)})
        if labels is not None:
            row["accuracy"] = float((predicted.cpu() == labels[start : start + window].cpu()).double().mean())
        verdicts = [
            DETECTORS[name](reference, part, permutations=permutations, generator=generator) for name in detectors
        ]
        for v in verdicts:
            row.update(
                {
                    f"{v.detector}_statistic": v.statistic,
                    f"{v.detector}_p_value": v.p_value,
                    f"{v.detector}_threshold": v.threshold,
                    f"{v.detector}_drift": v.drift,
                }
            )
        row["alert"] = alert(verdicts)
        yield row
