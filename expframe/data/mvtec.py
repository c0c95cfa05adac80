"""An MVTec AD category read exactly as published, for normal/defect classification with no file moved.

MVTec AD ships `<category>/train/good/` (normal images only: it was made for anomaly detection),
`<category>/test/good/`, `<category>/test/<defect>/` (one folder per defect type) and
`<category>/ground_truth/<defect>/` (pixel masks, not read here). A classifier needs defects to train
on, so every `train/good` image trains, and `test/good` and each `test/<defect>` folder are cut,
seeded and stratified (each folder on its own), into `dataset.split`'s train, validation and test
shares. Labels: 0 `good`, 1 `defect` (the positive class of the binary figures).

Images are decoded and cached as an image folder's are (expframe/data/image_folder.py): resized to
`dataset.image_size`, `dataset.channels` 1 or 3, links out of the folder and crafted headers skipped.
"""

from pathlib import Path

import numpy as np

from expframe.data.image_folder import DEFAULT_MAX_PIXELS, check_decoding, decoded, image_files, splits_from_cache
from expframe.data.raw import RawSplits, project_path
from expframe.errors import ConfigError

NAMES = ("good", "defect")
SHARES = ("train", "val", "test")


def category_folder(root: str | None, category: str | None) -> Path:
    """`root` itself when it holds train/ and test/, else `root/category`."""
    if root is None:
        raise ConfigError("dataset.root", None, "must name an MVTec AD folder (a category, or one holding categories)")
    where = project_path(root)
    if not where.is_dir():
        raise ConfigError("dataset.root", str(where), "is not a folder")
    if category is None and (where / "train").is_dir():
        return where
    found = sorted(p.name for p in where.iterdir() if (p / "train").is_dir() and (p / "test").is_dir())
    if category is None or category not in found or "/" in category or category.startswith("."):
        allowed = f"one of {', '.join(found)}" if found else "a category folder (none found under dataset.root)"
        raise ConfigError("dataset.category", category, f"must be {allowed}")
    return where / category


def check_split(split: object) -> dict[str, float]:
    values = dict(split) if hasattr(split, "keys") else None
    ok = values is not None and set(values) == set(SHARES)
    ok = ok and all(isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 for v in values.values())
    if not ok or abs(sum(values.values()) - 1) > 1e-9 or values["test"] <= 0:
        raise ConfigError(
            "dataset.split", split, "must be {train: a, val: b, test: c}, shares >= 0 that sum to 1, test > 0"
        )
    return values


def share_out(paths: list[Path], shares: dict[str, float], rng: np.random.Generator) -> dict[str, list[Path]]:
    """One folder's images cut into the shares, in a seeded order; rounding gives test what is left."""
    order = [paths[i] for i in rng.permutation(len(paths))]
    n_train = round(shares["train"] * len(order))
    n_val = min(round(shares["val"] * len(order)), len(order) - n_train)
    return {"train": order[:n_train], "val": order[n_train : n_train + n_val], "test": order[n_train + n_val :]}


def list_mvtec(folder: Path, shares: dict[str, float], seed: int, strict: bool) -> dict[str, list[tuple[Path, int]]]:
    for part in ("train/good", "test/good"):
        if not (folder / part).is_dir():
            raise ConfigError("dataset.root", str(folder), f"has no {part}/ folder (MVTec AD's layout)")
    defects = sorted(
        p for p in (folder / "test").iterdir() if p.is_dir() and p.name != "good" and not p.name.startswith(".")
    )
    if not defects:
        raise ConfigError("dataset.root", str(folder), "has no test/<defect>/ folder: nothing to learn defects from")
    files: dict[str, list[tuple[Path, int]]] = {s: [] for s in SHARES}
    files["train"] += [(p, 0) for p in image_files(folder / "train" / "good", folder, strict)]
    rng = np.random.default_rng(seed)
    for label, source in [(0, folder / "test" / "good"), *((1, d) for d in defects)]:
        images = image_files(source, folder, strict)
        if not images:
            raise ConfigError("dataset.root", str(source), "is an empty folder (no .png or .jpg files)")
        for share, paths in share_out(images, shares, rng).items():
            files[share] += [(p, label) for p in paths]
    for share in SHARES:
        if share != "val" and not any(label for _, label in files[share]):
            raise ConfigError("dataset.split", dict(shares), f"leaves no defect image in {share}; raise its share")
    return {s: entries for s, entries in files.items() if entries}


def mvtec(
    root: str | None,
    category: str | None,
    image_size: int,
    channels: int,
    split: object,
    split_seed: int = 0,
    cache_dir: str | None = None,
    strict: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> RawSplits:
    """uint8 NCHW images; the validation share follows the training images (`val_size` of them)."""
    check_decoding(image_size, channels)
    shares = check_split(split)
    folder = category_folder(root, category)
    files = list_mvtec(folder, shares, split_seed, strict)
    cache = decoded(folder, files, list(NAMES), image_size, channels, cache_dir, strict, max_pixels)
    return splits_from_cache(cache, folder, list(NAMES), positive=1)
