"""Robustness under shift in a report: ImageNet-C's mCE of every configuration against the baseline,
a heatmap (configuration x corruption) and a severity curve per configuration.

Hendrycks & Dietterich's corruption error of a model f on corruption c is its error summed over the
severities over the same sum for a reference model, here the ablation's own baseline configuration:
CE_c = sum_s E(f, c, s) / sum_s E(base, c, s), mCE = the mean of CE_c over corruptions, in percent (the
baseline is 100 by definition, as AlexNet is for ImageNet-C). The relative CE subtracts each model's
clean error first: sum_s (E(f, c, s) - E(f, clean)) / sum_s (E(base, c, s) - E(base, clean)). Both are
computed from metrics.json alone: with the same severities in both runs, the sums' ratio is the ratio
of the means, `1 - shift_acc_<c>`, averaged over a configuration's seeds. A corruption that costs the
baseline exactly nothing has no relative CE (the ratio is undefined): it is left out of that mean, and
the report says so; one that costs it less than `--resolve` is kept, as defined, with a warning.
"""

import json
import logging
import math
from pathlib import Path

from expframe.record import catalogue as figures
from expframe.record.atomic import write_atomic
from expframe.record.files import SHIFT_FILE
from expframe.report.format import number
from expframe.report.plotting import min_max, save

log = logging.getLogger("expframe")


def scored_corruptions(df) -> list[str]:
    """The corruptions some finished run was scored on, in the catalogue's order."""
    ok = df[df["status"] == "ok"]
    return [c for c in figures.CORRUPTIONS if f"shift_acc_{c}" in ok and ok[f"shift_acc_{c}"].notna().any()]


def _config_means(ok, keys: list[str], columns: list[str]):
    grouped = ok.assign(**{k: ok[k].astype(str) for k in keys}).groupby(keys, sort=False) if keys else None
    if grouped is None:
        return ok[columns].mean().to_frame().T.assign(n=len(ok))
    means = grouped[columns].mean()
    means["n"] = grouped.size()
    return means.reset_index()


def corruption_errors(ok, keys: list[str], baseline: tuple, resolve: float = 0.01) -> tuple[object, list[str]]:
    """One row per configuration: n, clean accuracy, shift_acc, mCE, relative_mCE (percent) and each
    corruption's CE and relative CE; and the lines that say what to read with care: a relative CE
    whose baseline loses less than `resolve` under the corruption divides by a noise-sized drop."""
    corruptions = scored_corruptions(ok)
    columns = ["test_acc", "shift_acc", *(f"shift_acc_{c}" for c in corruptions)]
    table = _config_means(ok, keys, columns)
    base_row = table[
        [all(str(r[k]) == str(v) for k, v in zip(keys, baseline, strict=True)) for _, r in table.iterrows()]
    ]
    notes = []
    if base_row.empty:
        return None, ["no robustness table: the baseline configuration has no finished run with shift figures"]
    base = base_row.iloc[0]
    undefined: dict[str, int] = {}
    small = [c for c in corruptions if 0 < base["test_acc"] - base[f"shift_acc_{c}"] < resolve]
    for i, row in table.iterrows():
        ce, rel = [], []
        for c in corruptions:
            acc, base_acc = row[f"shift_acc_{c}"], base[f"shift_acc_{c}"]
            if _missing(acc) or _missing(base_acc):
                table.loc[i, [f"CE_{c}", f"relative_CE_{c}"]] = math.nan
                continue
            error, base_error = 1 - acc, 1 - base_acc
            ce.append(100 * error / base_error if base_error > 0 else math.nan)
            drop, base_drop = row["test_acc"] - acc, base["test_acc"] - base_acc
            rel.append(100 * drop / base_drop if base_drop != 0 else math.nan)
            if base_drop == 0:
                undefined[c] = 1
            table.loc[i, f"CE_{c}"], table.loc[i, f"relative_CE_{c}"] = ce[-1], rel[-1]
        table.loc[i, "mCE"] = _mean(ce)
        table.loc[i, "relative_mCE"] = _mean(rel)
    if undefined:
        notes.append(
            "relative mCE leaves out " + ", ".join(undefined) + ": the baseline's accuracy under it equals its "
            "clean accuracy (no drop to divide by)"
        )
    if small:
        notes.append(
            f"read relative mCE with care: the baseline loses less than {resolve * 100:g} point(s) (--resolve) under "
            + ", ".join(small)
            + ", so their relative CE divides by a drop the size of the noise (each is in robustness.csv)"
        )
    ordered = [*keys, "n", "test_acc", "shift_acc", "mCE", "relative_mCE"]
    ordered += [f"{kind}{c}" for c in corruptions for kind in ("CE_", "relative_CE_")]
    return table[ordered], notes


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _mean(values: list[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


def robustness_section(ok, keys: list[str], baseline: tuple, out: Path, resolve: float) -> str:
    """robustness.csv in `out`, and the report's markdown section: one row per configuration."""
    table, notes = corruption_errors(ok, keys, baseline, resolve)
    if table is None:
        return notes[0]
    write_atomic(out / "robustness.csv", table.to_csv(index=False))
    shown = table[[*keys, "n", "test_acc", "shift_acc", "mCE", "relative_mCE"]].copy()
    for column in ("test_acc", "shift_acc"):
        shown[column] = [number(v) for v in shown[column]]
    for column in ("mCE", "relative_mCE"):
        shown[column] = ["–" if _missing(v) else f"{v:.1f}" for v in shown[column]]
    named = ", ".join(f"{k}={v}" for k, v in zip(keys, baseline, strict=True)) or "the only configuration"
    corruptions = scored_corruptions(ok)
    text = (
        f"Robustness under shift ({len(corruptions)} corruptions): ImageNet-C's mCE and relative mCE, in percent of "
        f"the baseline ({named}) = 100; lower is more robust. Per corruption: robustness.csv.\n\n"
        + shown.to_markdown(index=False, disable_numparse=True)
    )
    return text + "".join(f"\n\n{line}." for line in notes)


def severity_rows(data) -> list[dict]:
    """(variant, severity, accuracy) from each finished run's shift.json, its mean over corruptions per
    severity; severity 0 is the clean test accuracy. A missing or malformed file is skipped."""
    rows = []
    for _, run in data.iterrows():
        scores = read_shift_file(Path(run["run_dir"]))
        if not scores:
            continue
        by_severity: dict[int, list[float]] = {}
        for per in scores.values():
            for severity, acc in per.items():
                by_severity.setdefault(severity, []).append(acc)
        rows.append({"variant": run["variant"], "severity": 0, "accuracy": run["test_acc"]})
        rows += [
            {"variant": run["variant"], "severity": s, "accuracy": sum(v) / len(v)}
            for s, v in sorted(by_severity.items())
        ]
    return rows


def read_shift_file(run_dir: Path) -> dict[str, dict[int, float]]:
    """{corruption: {severity: accuracy}} of a run folder's shift.json; {} when it is missing or not
    the file expframe writes (a run folder is untrusted input: nothing else is read from it)."""
    try:
        content = json.loads((run_dir / SHIFT_FILE).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(content, dict):
        return {}
    scores: dict[str, dict[int, float]] = {}
    for name, per in content.items():
        if name not in figures.CORRUPTIONS:
            continue
        if not isinstance(per, dict) or not all(
            s in ("1", "2", "3", "4", "5") and isinstance(a, int | float) and 0 <= a <= 1 for s, a in per.items()
        ):
            log.warning("skipped %s: its %s entry is not {severity: accuracy}", run_dir / SHIFT_FILE, name)
            return {}
        scores[name] = {int(s): float(a) for s, a in per.items()}
    return scores


def heatmap(data, corruptions: list[str], path: Path, plt, sns) -> Path:
    """Accuracy per configuration (rows) and corruption (columns, by family), mean over severities
    and seeds, each cell written: readable at 17 corruptions."""
    table = data.groupby("variant", sort=False)[[f"shift_acc_{c}" for c in corruptions]].mean()
    table.columns = corruptions
    width = 1.5 + 0.62 * len(corruptions) + 0.07 * max(len(v) for v in table.index)
    fig, ax = plt.subplots(figsize=(width, 0.45 * len(table) + 2.2), layout="constrained")
    sns.heatmap(table, annot=True, fmt=".2f", vmin=0, vmax=1, cmap="viridis", cbar_kws={"label": "accuracy"}, ax=ax)
    ax.set_xticklabels([c.replace("_", " ") for c in corruptions], rotation=45, ha="right", fontsize=8)
    ax.tick_params(axis="y", rotation=0)
    ax.set_ylabel("")
    ax.set_title("accuracy under each corruption (mean over severities and seeds)")
    return save(fig, path, plt)


def severity_curve(data, path: Path, plt, sns) -> Path | None:
    """Accuracy against severity (0 = clean), one line per configuration, band: min-max over seeds."""
    import pandas as pd

    rows = severity_rows(data)
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(8, 5), layout="constrained")
    sns.lineplot(
        data=pd.DataFrame(rows), x="severity", y="accuracy", hue="variant", marker="o", errorbar=min_max, ax=ax
    )
    ax.set_xticks(range(6), ["clean", "1", "2", "3", "4", "5"])
    ax.set_title("accuracy vs corruption severity (mean over corruptions; band: min-max over seeds)")
    ax.legend(bbox_to_anchor=(1.02, 1), loc="upper left", fontsize=8)
    return save(fig, path, plt)
