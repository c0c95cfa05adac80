"""Which differences in an ablation table are real: deltas against a baseline with 95% intervals,
Holm-adjusted verdicts, the seeds a difference of a given size would need, and main effects.

Every test and interval comes from scipy.stats. A configuration is compared with the baseline
paired by seed when both ran the same seeds (same seed: same initial weights and split, so the
paired difference removes that noise), with Welch's t otherwise. Speed figures leave out runs whose
timing was contended (counted, not hidden).
"""

import warnings
from dataclasses import dataclass

import numpy as np

from expframe.record import catalogue as figures
from expframe.report.format import as_text, number

ALPHA = 0.05
MAX_SEEDS = 10_000
POWER = 0.8


@dataclass
class Delta:
    config: tuple
    figure: str
    n: int
    mean: float | None
    delta: float | None = None
    low: float | None = None
    high: float | None = None
    p: float | None = None
    p_holm: float | None = None
    test: str | None = None
    verdict: str = ""
    left_out: int = 0


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjustment: the k-th smallest p times (m - k + 1), kept monotone, at most 1."""
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    adjusted, running = [0.0] * len(pvalues), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(pvalues) - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def _values(runs, figure: str) -> tuple[dict, int]:
    """{seed: value} of the runs that count for this figure, and how many were left out (its
    estimator could not hold: the figure's flag)."""
    flag = figures.figure(figure).flag
    kept = runs[~runs[flag].astype(bool)] if flag else runs
    values = {seed: v for seed, v in zip(kept["seed"], kept[figure], strict=True) if v == v}
    return values, len(runs) - len(kept)


def compare(variant: dict, base: dict) -> tuple[float, float, float, float, str]:
    """(delta, low, high, p, test) of variant minus baseline: paired over shared seeds when both ran
    the same seeds, Welch's t otherwise. scipy's warning about nearly identical samples is silenced:
    identical differences are handled exactly, and the interval says the rest."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return _compare(variant, base)


def _compare(variant: dict, base: dict) -> tuple[float, float, float, float, str]:
    from scipy import stats  # 0.5 s to import: only when a table has a comparison

    a, b = variant, base
    if set(a) == set(b) and len(a) >= 2:
        seeds = sorted(a)
        x, y = np.array([a[s] for s in seeds]), np.array([b[s] for s in seeds])
        differences = x - y
        if np.all(differences == differences[0]):  # no spread: the difference is exact
            return (
                float(differences[0]),
                float(differences[0]),
                float(differences[0]),
                0.0 if differences[0] else 1.0,
                "paired",
            )
        result = stats.ttest_rel(x, y)
        test = "paired"
    else:
        x, y = np.array(list(a.values())), np.array(list(b.values()))
        result = stats.ttest_ind(x, y, equal_var=False)
        test = "Welch"
    interval = result.confidence_interval(1 - ALPHA)
    return float(x.mean() - y.mean()), float(interval.low), float(interval.high), float(result.pvalue), test


def deltas(ok, keys: list[str], figure: str, baseline: tuple) -> list[Delta]:
    """One Delta per configuration of `ok` (runs with status ok), against `baseline`."""
    groups = {cfg: runs for cfg, runs in ok.groupby([ok[k].astype(str) for k in keys], sort=False)}
    groups = {(cfg if isinstance(cfg, tuple) else (cfg,)): runs for cfg, runs in groups.items()}
    base, _ = _values(groups[baseline], figure) if baseline in groups else ({}, 0)
    out = []
    for cfg, runs in groups.items():
        values, left_out = _values(runs, figure)
        row = Delta(cfg, figure, len(values), float(np.mean(list(values.values()))) if values else None)
        row.left_out = left_out
        if cfg == baseline:
            row.verdict = "baseline"
        elif len(values) < 2 or len(base) < 2:
            row.verdict = f"{len(values)} seed" if len(values) == 1 else "no runs" if not values else "baseline: 1 seed"
        else:
            row.delta, row.low, row.high, row.p, row.test = compare(values, base)
        out.append(row)
    tested = [r for r in out if r.p is not None]
    for row, adjusted in zip(tested, holm([r.p for r in tested]), strict=True):
        row.p_holm = adjusted
        row.verdict = verdict(figure, row.delta, adjusted)
    return out


def verdict(figure: str, delta: float, p_adjusted: float) -> str:
    if p_adjusted >= ALPHA or delta == 0:
        return "no detectable difference"
    higher = figures.figure(figure).higher_is_better
    return "better" if (delta > 0) == bool(higher) else "worse"


def seeds_needed(sd: float, difference: float, alpha: float = ALPHA, power: float = POWER) -> int | None:
    """Seeds per configuration for a two-sided two-sample t-test to detect `difference` at this
    spread with this power (noncentral t); None when there is no spread to go on."""
    from scipy import stats  # 0.5 s to import: only when a table has a comparison

    if not sd or sd != sd or difference <= 0:
        return None

    def reached(n: int) -> bool:
        df = 2 * n - 2
        nc = difference / (sd * np.sqrt(2 / n))
        t = stats.t.ppf(1 - alpha / 2, df)
        return stats.nct.sf(t, df, nc) + stats.nct.cdf(-t, df, nc) >= power

    # the power grows with n: double n until it reaches the power, then bisect (a few dozen scipy
    # calls, not up to 10,000; far out, the noncentral t of scipy loses precision, so go no further)
    high = 2
    while not reached(high):
        if high >= MAX_SEEDS:
            return None
        high *= 2
    low = max(2, high // 2)
    while low < high:
        middle = (low + high) // 2
        low, high = (low, middle) if reached(middle) else (middle + 1, high)
    return low


def pooled_sd(ok, keys: list[str], figure: str) -> float | None:
    """The within-configuration spread (pooled over configurations with 2 or more runs)."""
    squares, dof = 0.0, 0
    for _, runs in ok.groupby([ok[k].astype(str) for k in keys], sort=False):
        values = runs[figure].dropna()
        if len(values) >= 2:
            squares += float(((values - values.mean()) ** 2).sum())
            dof += len(values) - 1
    return float(np.sqrt(squares / dof)) if dof else None


def main_effects(ok, keys: list[str], figure: str) -> list[str]:
    """Per swept key: its levels' marginal means (over every other key), each level against the first
    with Welch's interval; and a note where a key's effect changes sign with another key's level."""
    from scipy import stats  # 0.5 s to import: only when a table has a comparison

    lines = []
    for key in keys:
        levels = list(dict.fromkeys(ok[key].astype(str)))
        if len(levels) < 2:
            continue
        values = {lv: ok[ok[key].astype(str) == lv][figure].dropna().to_numpy() for lv in levels}
        parts = [f"{lv} {number(values[lv].mean())}" for lv in levels]
        for lv in levels[1:]:
            a, b = values[lv], values[levels[0]]
            if len(a) >= 2 and len(b) >= 2:
                ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(1 - ALPHA)
                low, high = number(ci.low, sign=True), number(ci.high, sign=True)
                delta = f"{number(a.mean() - b.mean(), sign=True)} [{low}, {high}]"
                parts.append(f"{lv} - {levels[0]} = {delta}")
        lines.append(f"main effect of {key} on {figure}: " + "; ".join(parts))
        for other in keys:
            if other == key:
                continue
            signs = set()
            for _, runs in ok.groupby(ok[other].astype(str)):
                by_level = [runs[runs[key].astype(str) == lv][figure].mean() for lv in levels[:2]]
                if all(v == v for v in by_level) and by_level[1] != by_level[0]:
                    signs.add(by_level[1] > by_level[0])
            if len(signs) == 2:
                lines.append(f"interaction: the effect of {key} on {figure} changes sign with {other}")
    return lines


# the practical's three figures (speed, memory, accuracy) and the held-out accuracy
DEFAULT_FIGURES = (
    "test_acc",
    "shift_acc",
    "retrain_gain",
    "retrain_forgetting",
    "val_acc",
    "epoch_time_s",
    "peak_mem_mb",
)


def find_baseline(ok, keys: list[str], wanted: dict[str, object]) -> tuple[tuple | None, str]:
    """The one configuration whose keys hold `wanted`'s values (an Optuna trial number is not part
    of what is compared), and a line that names it or says why there is none."""
    compared = [k for k in keys if k != "trial"]
    if not compared:
        return (
            None,
            "no baseline: nothing differs between these runs (one configuration), so there is nothing to compare",
        )
    missing = [k for k in compared if k not in wanted]
    if missing:
        return None, f"no baseline: {', '.join(missing)} has no default value to compare with; use --baseline"
    configs = list(dict.fromkeys(zip(*(ok[k] for k in keys), strict=True))) if keys else []
    target = {k: as_text(wanted[k]) for k in compared}
    matches = [c for c in configs if all(target[k] == v for k, v in zip(keys, c, strict=True) if k in target)]
    if len(matches) != 1:
        named = ", ".join(f"{k}={v}" for k, v in target.items())
        return (
            None,
            f"no baseline: {'no' if not matches else len(matches)} configuration(s) with {named}; use --baseline",
        )
    return matches[0], "baseline: " + ", ".join(f"{k}={v}" for k, v in zip(keys, matches[0], strict=True))


def _cell(row: Delta) -> tuple[str, str]:
    mean = "–" if row.mean is None else number(row.mean)
    if row.delta is None:
        return mean, row.verdict
    marker = "P" if row.test == "paired" else "W"
    low, high = number(row.low, sign=True), number(row.high, sign=True)
    interval = f"{number(row.delta, sign=True)} [{low}, {high}] {marker}"
    return mean, f"{interval}: {row.verdict}"


def ablation_tables(df, keys: list[str], chosen: list[str], wanted: dict[str, str], resolve: float):
    """(markdown, long rows for deltas.csv, {figure: [Delta]}, the most seeds any figure needs)
    against the baseline."""
    ok = df[df["status"] == "ok"]
    baseline, line = find_baseline(ok, keys, wanted)
    if baseline is None:
        return line, [], {}, None
    shown = [f for f in chosen if f in DEFAULT_FIGURES] or chosen
    results = {f: deltas(ok, keys, f, baseline) for f in shown}
    counts = df.assign(**{k: df[k].astype(str) for k in keys}).groupby(keys, sort=False)["status"]
    status = {(c if isinstance(c, tuple) else (c,)): s.value_counts().to_dict() for c, s in counts}
    rows = []
    for i, cfg in enumerate(r.config for r in results[shown[0]]):
        row = dict(zip(keys, cfg, strict=True))
        row["n"] = str(results[shown[0]][i].n)
        row["failed"] = str(status.get(cfg, {}).get("failed", 0))
        row["diverged"] = str(status.get(cfg, {}).get("diverged", 0))
        for f in shown:
            row[f], row[f"Δ {f} [95%]"] = _cell(results[f][i])
        rows.append(row)
    import pandas as pd

    markdown = (
        f"Against the baseline ({line.split(': ', 1)[1]}): Δ = configuration − baseline with its 95% interval, "
        "paired by seed (P) or Welch's (W) when the seeds differ; verdicts at 5% after Holm's adjustment over "
        "each figure's comparisons (the intervals themselves are not adjusted).\n\n"
        + pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True)
    )
    left_out = {f: sum(r.left_out for r in results[f]) for f in shown}
    if any(left_out.values()):
        markdown += (
            "\n\nLeft out as unreliable (their estimator could not hold; docs/shared-machines.md): "
            + ", ".join(f"{n} run(s) of {f}" for f, n in left_out.items() if n)
        )
    most = None
    for f in shown:
        sd = pooled_sd(ok, keys, f)
        size = resolve if figures.figure(f).unit == "" and f.endswith("acc") else None
        if size is None:
            base_mean = next(r.mean for r in results[f] if r.config == baseline)
            size = 0.1 * abs(base_mean) if base_mean else None
        needed = seeds_needed(sd, size) if size else None
        if needed:
            most = max(most or 0, needed)
            what = f"{size * 100:g} point(s)" if f.endswith("acc") else f"{number(size, 3)} (10% of the baseline)"
            markdown += (
                f"\n\nseeds needed to resolve {what} of {f} at this spread (sd {number(sd, 3)}, 80% power): {needed}"
            )
    repeated = ok.groupby([ok[k].astype(str) for k in keys], sort=False).size().min() >= 2 if keys else False
    if len(keys) >= 2 and not repeated:
        markdown += "\n\nNo main effects or interactions: each configuration ran once (n=1); repeat seeds to get them."
    elif len(keys) >= 2:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            # and robustness's, when the runs were scored under shift: which axis moves it is the question
            effects = [shown[0], *(["shift_acc"] if "shift_acc" in shown[1:] else [])]
            markdown += "".join(f"\n\n{line}" for figure in effects for line in main_effects(ok, keys, figure))
    long = [
        {**dict(zip(keys, r.config, strict=True)), **{k: v for k, v in vars(r).items() if k != "config"}}
        for f in shown
        for r in results[f]
    ]
    return markdown, long, results, most


def _tex(text: object) -> str:
    return str(text).replace("\\", "\\textbackslash{}").replace("_", "\\_").replace("%", "\\%").replace("&", "\\&")


def best_table_tex(ok, keys: list[str], shown: list[str]) -> str:
    """booktabs: per figure the best configuration's mean in bold and a dagger on every configuration
    not detectably different from it (paired or Welch, Holm over the column), the legend in the caption."""
    import pandas as pd

    columns: dict[str, dict[tuple, str]] = {}
    configs: list[tuple] = []
    for f in shown:
        means = {
            (c if isinstance(c, tuple) else (c,)): runs[f].mean()
            for c, runs in ok.groupby([ok[k] for k in keys], sort=False)
        }
        means = {c: None if m != m else float(m) for c, m in means.items()}
        configs = configs or list(means)
        ranked = [c for c in means if means[c] is not None]
        if not ranked:
            continue
        higher = figures.figure(f).higher_is_better
        best = (max if higher else min)(ranked, key=lambda c: means[c])
        tied = {r.config for r in deltas(ok, keys, f, best) if r.verdict == "no detectable difference"}
        cells = {}
        for c in configs:
            value = "–" if means.get(c) is None else number(means[c])
            cells[c] = f"\\textbf{{{value}}}" if c == best else f"{value}$^\\dagger$" if c in tied else value
        columns[_tex(f)] = cells
    rows = [
        {**{_tex(k): _tex(v) for k, v in zip(keys, c, strict=True)}, **{f: cells[c] for f, cells in columns.items()}}
        for c in configs
    ]
    caption = (
        "Mean over seeds. Bold: the best configuration of each column; $^\\dagger$: not detectably different "
        "from it (95\\%, paired by seed or Welch's t, Holm's adjustment over the column)."
    )
    return pd.DataFrame(rows).to_latex(index=False, escape=False, caption=caption)
