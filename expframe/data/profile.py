"""What a data set holds before any model sees it: per split and class the counts, shares and
imbalance, what always guessing one class scores, the images' sizes, modes and channel statistics,
the files that could not be used, and the copies within and across splits (expframe/data/duplicates.py).

The splits are a run's: the training pool cut into train and validation by `split_indices` with the
run's seed and `dataset.val_fraction` (or a val/ folder), and the test split; the statistics are
the ones the loader normalises with. Everything returned is plain JSON (data.json).
"""

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from expframe.data.device_data import normalisation, split_indices
from expframe.data.duplicates import NEAR_RULE, Fingerprints, fingerprints, groups, leaks, rows_per_batch
from expframe.data.raw import RawSplits

# the training pool's name in the class table
POOL = "train+val"


@dataclass
class Splits:
    """Row indices of each split into the source's arrays: train and val into the training pool."""

    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor

    def items(self) -> list[tuple[str, torch.Tensor]]:
        return [(name, idx) for name, idx in (("train", self.train), ("val", self.val), ("test", self.test))]

    @property
    def pool(self) -> torch.Tensor:
        """Every training row, train and val: a folder's train/ (and val/) as it lies on disk."""
        return torch.cat([self.train, self.val]).sort().values


def run_splits(raw: RawSplits, val_fraction: float, seed: int) -> Splits:
    train, val = split_indices(len(raw.train_y), val_fraction, seed, raw.val_size)
    return Splits(train, val, torch.arange(len(raw.test_y)))


def class_names(raw: RawSplits) -> list[str]:
    return list(raw.class_names) if raw.class_names else [str(i) for i in range(raw.num_classes)]


def labels_of(raw: RawSplits, split: str, idx: torch.Tensor) -> torch.Tensor:
    return (raw.test_y if split == "test" else raw.train_y)[idx]


def class_counts(raw: RawSplits, splits: Splits) -> dict[str, dict]:
    """Per split, and for the whole training pool (`train+val`: what the folders hold before a run
    cuts its validation split): counts and shares per class, the imbalance (largest class /
    smallest; None when a class is missing) and the accuracy of always answering the train split's
    largest class."""
    names = class_names(raw)
    majority = int(torch.bincount(raw.train_y[splits.train], minlength=raw.num_classes).argmax())
    table = {}
    for split, idx in [(POOL, splits.pool), *splits.items()]:
        counts = torch.bincount(labels_of(raw, split, idx), minlength=raw.num_classes).tolist()
        total = sum(counts)
        if not total:
            continue
        table[split] = {
            "count": total,
            "classes": {n: {"count": c, "share": c / total} for n, c in zip(names, counts, strict=True)},
            "imbalance": max(counts) / min(counts) if min(counts) else None,
            "majority_accuracy": counts[majority] / total,
        }
    return table


def _spread(values: np.ndarray) -> dict[str, float]:
    quantiles = np.quantile(values, [0, 0.5, 1]) if len(values) else [float("nan")] * 3
    return dict(zip(("min", "median", "max"), (float(q) for q in quantiles), strict=True))


def image_facts(raw: RawSplits) -> dict:
    """The stored shape; for image folders the files' own heights, widths, aspect ratios (width /
    height) and PIL modes, from their headers, before the loader resized them; the loader's
    per-channel mean and std on the [0, 1] scale, and each split's own."""
    facts: dict = {"stored_shape": list(raw.train_x.shape[1:]), "layout": raw.layout}
    if raw.files is not None:
        sizes = torch.cat([raw.files.train_sizes, raw.files.test_sizes]).numpy().astype(np.float64)
        facts["files"] = {
            "height": _spread(sizes[:, 0]),
            "width": _spread(sizes[:, 1]),
            "aspect": _spread(sizes[:, 1] / np.maximum(sizes[:, 0], 1)),
            "distinct_sizes": len({(int(h), int(w)) for h, w in sizes}),
            "modes": dict(Counter(raw.files.train_modes + raw.files.test_modes).most_common()),
        }
    mean, std = normalisation(raw)
    scale = 255.0 if raw.train_x.dtype == torch.uint8 else 1.0
    facts["mean"] = (mean.flatten() / scale).tolist() if raw.layout == "NCHW" else None
    facts["std"] = (std.flatten() / scale).tolist() if raw.layout == "NCHW" else None
    return facts


def bad_files(raw: RawSplits) -> list[dict[str, str]]:
    """Files the loader skipped, `path (why)` split into the path and the reason."""
    if raw.files is None:
        return []
    found = []
    for entry in raw.files.skipped:
        path, _, why = entry.partition(" (")
        relative = Path(path).relative_to(raw.files.root) if Path(path).is_relative_to(raw.files.root) else path
        found.append({"file": str(relative), "reason": why[:-1] if why.endswith(")") else why})
    return found


def pixels(raw: RawSplits, split: str, idx: torch.Tensor) -> torch.Tensor:
    """A split's rows as 8-bit images (float sources' [0, 1] values rounded to 1/255)."""
    x = (raw.test_x if split == "test" else raw.train_x)[idx]
    return x if x.dtype == torch.uint8 else (x * 255).round_().clamp_(0, 255).to(torch.uint8)


def name_of(raw: RawSplits, split: str, row: int) -> str:
    """A file's name relative to the data folder, or `train[row]` / `test[row]` in the source's arrays."""
    if raw.files is not None:
        return (raw.files.test_files if split == "test" else raw.files.train_files)[row]
    return f"{'test' if split == 'test' else 'train'}[{row}]"


def copies(raw: RawSplits, splits: Splits) -> dict:
    """Groups of identical or near-identical images (by file or row), and the leaks across splits."""
    if raw.layout != "NCHW":
        return {"checked": False, "why": f"{raw.layout} rows are not images", "groups": [], "leaks": []}
    prints: dict[str, Fingerprints] = {}
    for split, idx in splits.items():
        size = rows_per_batch(tuple(raw.train_x.shape[1:]))
        prints[split] = fingerprints(pixels(raw, split, chunk) for chunk in idx.split(size))
    rows = dict(splits.items())
    found = groups(prints)
    return {
        "checked": True,
        "rule": f"identical: the same decoded pixels; {NEAR_RULE}",
        "groups": [
            {
                "identical": g.identical,
                "splits": g.splits,
                "members": [
                    {"split": s, "file": name_of(raw, s, int(rows[s][i])), "row": int(rows[s][i])} for s, i in g.members
                ],
            }
            for g in found
        ],
        "leaks": [vars(leak) for leak in leaks(prints)],
    }


def split_statistics(raw: RawSplits, splits: Splits) -> dict[str, dict[str, list[float]]]:
    """Each split's own per-channel mean and std on [0, 1] (population std, as the loader's for
    images): a test split far from the training one is a shift before any model."""
    if raw.layout != "NCHW":
        return {}
    from expframe.data.image_store import channel_stats

    stats = {}
    for split, idx in splits.items():
        if len(idx):
            mean, std = channel_stats(pixels(raw, split, idx))
            stats[split] = {"mean": (mean.flatten() / 255).tolist(), "std": (std.flatten() / 255).tolist()}
    return stats


def samples(raw: RawSplits, splits: Splits, per_class: int, seed: int) -> dict[str, torch.Tensor]:
    """Up to `per_class` training images of each class, picked by a generator seeded with `seed`."""
    generator = torch.Generator().manual_seed(seed)
    labels = raw.train_y[splits.train]
    picked = {}
    for label, name in enumerate(class_names(raw)):
        rows = splits.train[labels == label]
        chosen = rows[torch.randperm(len(rows), generator=generator)[:per_class]]
        picked[name] = pixels(raw, "train", chosen)
    return picked
