"""The data report's words and pictures, from data.json's values (expframe/data/profile.py): summary.md,
the terminal's short summary, the class-distribution figure, a grid of samples per class and the
copies found across splits side by side. Imports no torch: images arrive as uint8 numpy arrays."""

from pathlib import Path

import numpy as np

# the training pool's column: train and val together, as the folders hold them
POOL = "train+val"
# copies shown side by side in near_duplicates.png (the full list is in data.json and summary.md)
SHOWN_COPIES = 8
LISTED_GROUPS = 50


def _pct(share: float) -> str:
    return f"{100 * share:.1f}%"


def _ratio(value: float | None) -> str:
    return "a class is missing" if value is None else f"{value:.2f}:1"


def leak_lines(report: dict) -> list[str]:
    copies = report["duplicates"]
    lines = []
    for leak in copies["leaks"]:
        kinds = [f"{leak[k]} {k if k == 'identical' else 'near-identical'}" for k in ("identical", "near") if leak[k]]
        lines.append(f"LEAK: {' and '.join(kinds)} {leak['split']} image(s) also in {leak['other']}")
    return lines


def short_summary(report: dict) -> list[str]:
    """What the terminal prints: sizes, imbalance, chance, statistics, bad files, copies, leaks."""
    counts = report["classes"]
    lines = [
        f"{report['dataset']['name']}: "
        + ", ".join(f"{split} {table['count']:,}" for split, table in counts.items() if split != POOL)
        + f" images of {len(report['class_names'])} classes"
    ]
    train, pool = counts["train"], counts[POOL]
    largest = max(train["classes"], key=lambda n: train["classes"][n]["count"])
    lines.append(
        f"imbalance {_ratio(pool['imbalance'])} ({POOL}; train split {_ratio(train['imbalance'])}); "
        f"chance {report['chance_accuracy']:.3f}, always '{largest}' "
        + ", ".join(f"{s} {t['majority_accuracy']:.3f}" for s, t in counts.items() if s != POOL)
    )
    images = report["images"]
    if images.get("mean") is not None:
        lines.append(
            f"mean {', '.join(f'{v:.4f}' for v in images['mean'])}  std {', '.join(f'{v:.4f}' for v in images['std'])}"
            " (the loader's, on [0, 1])"
        )
    if report["bad_files"]:
        first = report["bad_files"][0]
        lines.append(f"{len(report['bad_files'])} file(s) not used: {first['file']} ({first['reason']}) ...")
    copies = report["duplicates"]
    if copies["checked"]:
        identical = sum(1 for g in copies["groups"] if g["identical"])
        lines.append(
            f"{len(copies['groups'])} group(s) of copies ({identical} identical, "
            f"{len(copies['groups']) - identical} near-identical)"
        )
    lines += leak_lines(report) or (["no copy across splits"] if copies["checked"] else [])
    return lines


def markdown(report: dict) -> str:
    names = report["class_names"]
    counts = report["classes"]
    out = [f"# Data report: {report['dataset']['name']}", ""]
    out.append(f"Command: `{report['command']}`  ")
    out.append(f"Splits as a run with seed={report['dataset']['seed']} cuts them: {report['dataset']['split_rule']}.")
    out.append("")
    leaks = leak_lines(report)
    if leaks:
        out += [f"> **Warning:** {line}" for line in leaks]
        out.append(">\n> A model scored on a copy of its training data scores what it learnt by heart.")
        out.append("")
    out += ["## Classes", ""]
    splits = list(counts)
    out.append("| class | " + " | ".join(splits) + " |")
    out.append("|---|" + "---:|" * len(splits))
    for name in names:
        cells = [
            f"{counts[s]['classes'][name]['count']:,} ({_pct(counts[s]['classes'][name]['share'])})" for s in splits
        ]
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    out.append("| **all** | " + " | ".join(f"{counts[s]['count']:,}" for s in splits) + " |")
    out.append(
        "| imbalance (largest / smallest) | " + " | ".join(_ratio(counts[s]["imbalance"]) for s in splits) + " |"
    )
    out.append(
        "| accuracy of always the train's largest class | "
        + " | ".join(f"{counts[s]['majority_accuracy']:.4f}" for s in splits)
        + " |"
    )
    out.append("")
    out.append(f"Chance accuracy (a uniform guess): {report['chance_accuracy']:.4f}.  ")
    weights = report["class_weights_balanced"]
    if weights is None:
        out.append(f"`loss.class_weights=balanced` cannot weigh these classes: {report['class_weights_unweighable']}.")
    else:
        listed = ", ".join(f"{n}: {w:.4f}" for n, w in weights.items())
        out.append(f"`loss.class_weights=balanced` weighs the classes {listed} (n / (k n_c) on the train split).")
    out += ["", "## Images", ""]
    images = report["images"]
    out.append(f"Stored as {images['layout']} {images['stored_shape']} (what the model sees).  ")
    files = images.get("files")
    if files:
        for key in ("height", "width", "aspect"):
            s = files[key]
            out.append(f"Files' {key}: min {s['min']:g}, median {s['median']:g}, max {s['max']:g}.  ")
        out.append(
            f"{files['distinct_sizes']} distinct file sizes; modes: "
            + ", ".join(f"{m} {n}" for m, n in files["modes"].items())
            + "."
        )
    if images.get("mean") is not None:
        out.append("")
        out.append("| | " + " | ".join(f"channel {c}" for c in range(len(images["mean"]))) + " |")
        out.append("|---|" + "---:|" * len(images["mean"]))
        out.append("| mean (the loader's, train + val) | " + " | ".join(f"{v:.4f}" for v in images["mean"]) + " |")
        out.append("| std (the loader's, train + val) | " + " | ".join(f"{v:.4f}" for v in images["std"]) + " |")
        for split, stats in images.get("per_split", {}).items():
            out.append(
                f"| {split} mean / std | "
                + " | ".join(f"{m:.4f} / {s:.4f}" for m, s in zip(stats["mean"], stats["std"], strict=True))
                + " |"
            )
    out += ["", "## Files not used", ""]
    if report["bad_files"]:
        out += [f"- `{b['file']}`: {b['reason']}" for b in report["bad_files"]]
    else:
        out.append("None." if report["images"].get("files") else "Not a folder of files.")
    out += ["", "## Copies", ""]
    copies = report["duplicates"]
    if not copies["checked"]:
        out.append(f"Not checked: {copies['why']}.")
    else:
        out.append(f"Rule: {copies['rule']}.")
        out.append("")
        if not copies["groups"]:
            out.append("No copies.")
        for g in copies["groups"][:LISTED_GROUPS]:
            kind = "identical" if g["identical"] else "near-identical"
            where = " + ".join(g["splits"])
            members = ", ".join(f"{m['split']}:`{m['file']}`" for m in g["members"])
            out.append(f"- {kind} ({where}){' **leak**' if len(g['splits']) > 1 else ''}: {members}")
        if len(copies["groups"]) > LISTED_GROUPS:
            out.append(f"- ... and {len(copies['groups']) - LISTED_GROUPS} more groups (data.json lists them all)")
    out += ["", f"Made in {report['seconds']:.2f} s.", ""]
    return "\n".join(out)


def _figure(width: float, height: float):
    """A matplotlib Figure on the Agg canvas, without pyplot (its import and state cost a second)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _rendered(fig, path: Path) -> np.ndarray:
    """The figure drawn once: saved as PNG and returned as RGB pixels (H, W, 3) for TensorBoard."""
    from PIL import Image

    fig.canvas.draw()
    pixels = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    Image.fromarray(pixels).save(path)
    return pixels


def class_figure(report: dict, path: Path) -> np.ndarray:
    """Images per class, one bar per split, each bar's share written above it."""
    names, splits = report["class_names"], list(report["classes"])
    width = 0.8 / len(splits)
    fig = _figure(max(4.0, 0.9 * len(names) + 2), 3.2)
    ax = fig.add_subplot()
    for k, split in enumerate(splits):
        classes = report["classes"][split]["classes"]
        positions = [i + (k - (len(splits) - 1) / 2) * width for i in range(len(names))]
        bars = ax.bar(positions, [classes[n]["count"] for n in names], width, label=split)
        ax.bar_label(bars, labels=[_pct(classes[n]["share"]) for n in names], fontsize=6, rotation=90, padding=2)
    ax.set_xticks(range(len(names)), names, rotation=30 if len(names) > 6 else 0)
    ax.set_ylabel("images")
    ax.set_title(f"{report['dataset']['name']}: images per class")
    ax.margins(y=0.2)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _rendered(fig, path)


def _tile(images: np.ndarray, per_row: int, pad: int = 2) -> np.ndarray:
    """uint8 images (N, C, H, W) side by side in one RGB row (H, per_row * (W + pad), 3), white padded."""
    n, channels, height, width = images.shape
    row = np.full((height, per_row * (width + pad), 3), 255, np.uint8)
    for i in range(n):
        image = images[i].transpose(1, 2, 0)
        row[:, i * (width + pad) : i * (width + pad) + width] = image if channels == 3 else image.repeat(3, axis=2)
    return row


def _labelled_rows(rows: list[np.ndarray], labels: list[str], title: str, path: Path, width: float) -> np.ndarray:
    """Rows of tiled images stacked, each labelled at its left: one image drawn, whatever the count."""
    grid = np.concatenate(rows)
    height = grid.shape[0] / len(rows)
    fig = _figure(width, min(16.0, 0.9 * len(rows) + 0.5))
    ax = fig.add_subplot()
    ax.imshow(grid, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([height * (i + 0.5) for i in range(len(rows))], labels, fontsize=7)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return _rendered(fig, path)


def sample_figure(samples: dict[str, np.ndarray], path: Path) -> np.ndarray:
    """A row of training images per class (seeded picks), the class named at its row."""
    per_row = max(len(v) for v in samples.values())
    rows = [_tile(images, per_row) for images in samples.values()]
    width = min(12.0, 1.0 * per_row + 1.2)
    return _labelled_rows(rows, list(samples), "training samples per class (seeded)", path, width)


def copies_figure(pairs: list[tuple[str, np.ndarray, str, np.ndarray]], path: Path) -> np.ndarray:
    """Copies across splits side by side, a pair per row named at its left: the reader judges them."""
    rows = [_tile(np.stack([first, second]), 2, pad=4) for _, first, _, second in pairs]
    labels = [f"{a[-32:]}\n{b[-32:]}" for a, _, b, _ in pairs]
    return _labelled_rows(rows, labels, "copies across splits (left: first, right: second)", path, 6.0)
