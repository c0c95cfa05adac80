"""The report's serving table and figure, from each run's deploy.json."""

import json
from pathlib import Path

from expframe.record.files import DEPLOY_FILE

COLUMNS = {
    "size_bytes": ("size KB", 1 / 1024, ".1f"),
    "compressed_bytes": ("zlib KB", 1 / 1024, ".1f"),
    "nonzero_fraction": ("non-zero", 1, ".2f"),
    "test_acc": ("test_acc", 1, ".4f"),
    "agreement": ("agrees with fp32", 1, ".4f"),
    "max_abs_logit_diff": ("max abs Δ logit", 1, ".2g"),
    "p50_ms": ("p50 ms", 1, ".4f"),
    "p95_ms": ("p95 ms", 1, ".4f"),
    "p99_ms": ("p99 ms", 1, ".4f"),
    "throughput_samples_per_s": ("samples/s @batch", 1, ",.0f"),
}


def deploy_rows(df, keys: list[str]) -> list[dict]:
    """One row per run and variant: the configuration's keys, the variant and its figures."""
    rows = []
    ok = df[df["status"] == "ok"]
    for run_dir, *values in zip(ok["run_dir"], *(ok[k] for k in keys), strict=True):
        try:
            served = json.loads((Path(run_dir) / DEPLOY_FILE).read_text())["variants"]
        except (OSError, ValueError, KeyError):
            continue
        config = {k: str(v) for k, v in zip(keys, values, strict=True)}
        for name, entry in served.items():
            rows.append({**config, "variant": name, **entry})
    return rows


def deploy_table(df, keys: list[str]) -> str:
    """Means over a configuration's repeats, per variant; a flagged (contended) latency is counted."""
    import pandas as pd

    rows = deploy_rows(df, keys)
    if not rows:
        return ""
    frame = pd.DataFrame(rows)
    by = [*keys, "variant"]
    groups = frame.groupby(by, sort=False)
    means = groups[[c for c in COLUMNS if c in frame]].mean()
    means["n"] = groups.size()
    means["contended"] = groups["timing_contended"].sum().astype(int)
    header = [*by, "n", *(label for c, (label, _, _) in COLUMNS.items() if c in means), "contended"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for index, row in means.iterrows():
        cells = list(index if isinstance(index, tuple) else (index,)) + [str(int(row["n"]))]
        for column, (_, scale, fmt) in COLUMNS.items():
            if column in means:
                value = row[column]
                cells.append("–" if value != value else f"{value * scale:{fmt}}")
        cells.append(str(int(row["contended"])))
        lines.append("| " + " | ".join(cells) + " |")
    notes = sorted({r["note"] for r in rows if r.get("note")})
    text = "Serving cost (deploy.json; latency at batch 1, 1 thread unless deploy.threads says otherwise):\n\n"
    return text + "\n".join(lines) + "".join(f"\n\n{n}." for n in notes)


def write_deploy_figure(df, keys: list[str], path: Path, plt) -> Path | None:
    """Test accuracy against p95 latency, one point per variant (and configuration), its area the file size."""
    import pandas as pd

    rows = deploy_rows(df, keys)
    if not rows:
        return None
    frame = pd.DataFrame(rows)
    frame["label"] = [", ".join([*(f"{k}={r[k]}" for k in keys), r["variant"]]) for _, r in frame.iterrows()]
    means = frame.groupby("label", sort=False)[["p95_ms", "test_acc", "size_bytes"]].mean()
    fig, ax = plt.subplots(figsize=(8, 5), layout="constrained")
    area = 30 + 400 * means["size_bytes"] / means["size_bytes"].max()
    ax.scatter(means["p95_ms"], means["test_acc"], s=area, alpha=0.6)
    for label, row in means.iterrows():
        ax.annotate(label, (row["p95_ms"], row["test_acc"]), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("p95 latency at batch 1 (ms, log scale)")
    ax.set_ylabel("test accuracy")
    ax.set_title("serving variants: marker area = file size")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, pil_kwargs={"compress_level": 1})
    plt.close(fig)
    return path
