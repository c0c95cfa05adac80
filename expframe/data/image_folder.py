"""Folders of images (`root/train|val|test/<class>/*.png|jpg`) decoded once into uint8 tensors and
cached in one file keyed by the file list, sizes, mtimes and the decoding settings.

Decoding is the slow part of an image data set (PIL per sample per epoch is what the practical's
ImageFolder loop pays); after the first run the cache is memory-mapped, so loading thousands of
images costs a file open. Labels come from the folder names under `train/` (sorted), or from a
`classes` map (`{good: 0, _other_: 1}`: `_other_` stands for every other folder, the MVTec layout).
"""

import hashlib
import io
import json
import logging
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from expframe.data.raw import RawSplits, project_path
from expframe.errors import ConfigError, short_reason
from expframe.record.atomic import write_atomic

log = logging.getLogger("expframe")
# torchvision 0.29 deprecates its image codecs in favour of TorchCodec; they still decode PNG and JPEG
# here, and one warning per file would bury the log (docs/images.md)
warnings.filterwarnings(
    "ignore", message="The image decoding and encoding capabilities of TorchVision", category=DeprecationWarning
)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
SPLITS = ("train", "val", "test")
CACHE_FORMAT = 1
OTHER = "_other_"
# pixels an image may declare before it is skipped undecoded (dataset.max_pixels): 50 MP is a 7,000 x
# 7,000 scan, 150 MB decoded as RGB; the decoders would try 10 GB for a crafted 100,000 x 100,000 header
DEFAULT_MAX_PIXELS = 50_000_000  # a folder name nobody uses, and a valid key on the command line


def _folders(split_dir: Path) -> list[Path]:
    return sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def image_files(folder: Path, root: Path, strict: bool) -> list[Path]:
    """The folder's image files; a link that leads out of `root` is skipped with a warning (an error
    with dataset.strict=true): a shared data folder must not read files elsewhere on the machine."""
    kept, outside = [], []
    inside = root.resolve()
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()):
        (kept if path.resolve().is_relative_to(inside) else outside).append(path)
    if outside and strict:
        raise ConfigError("dataset.strict", True, f"{outside[0]} links outside dataset.root ({root})")
    if outside:
        log.warning(
            "skipped %d file(s) that link outside dataset.root: %s", len(outside), ", ".join(map(str, outside[:3]))
        )
    return kept


def label_map(train_dir: Path, classes: dict | None) -> tuple[dict[str, int], list[str]]:
    """Folder name -> label, and one name per label (the folder, or the folders a label gathers)."""
    names = [p.name for p in _folders(train_dir)]
    if classes is None:
        return {n: i for i, n in enumerate(names)}, names
    labels = sorted(set(classes.values()))
    if any(isinstance(v, bool) or not isinstance(v, int) for v in labels) or labels != list(range(len(labels))):
        raise ConfigError("dataset.classes", classes, "must map folder names to labels 0, 1, ... (every one used)")
    per_label: list[list[str]] = [[] for _ in labels]
    for folder, label in classes.items():
        per_label[label].append("other" if folder == OTHER else folder)
    return dict(classes), ["+".join(n) for n in per_label]


def _label_of(folder: str, mapping: dict[str, int], split: str) -> int:
    if folder in mapping:
        return mapping[folder]
    if OTHER in mapping:
        return mapping[OTHER]
    raise ConfigError(
        "dataset.classes", f"{split}/{folder}", f"is a folder no label is given to (labels: {', '.join(mapping)})"
    )


def list_files(
    setting: str | None, classes: dict | None, strict: bool = False
) -> tuple[Path, dict[str, list[tuple[Path, int]]], list[str]]:
    """The folder `dataset.root` names, every image file per split with its label, and the label
    names: the checks that need no decoding (run before a sweep's first job, and by each load)."""
    if setting is None:
        raise ConfigError("dataset.root", None, "must name a folder holding train/<class>/ and test/<class>/")
    root = project_path(setting)
    if not root.is_dir():
        raise ConfigError("dataset.root", str(root), "is not a folder")
    if not (root / "train").is_dir():
        raise ConfigError(
            "dataset.root", str(root), "has no train/ folder (layout: train/<class>/*.png, test/<class>/)"
        )
    if not (root / "test").is_dir():
        raise ConfigError("dataset.root", str(root), "has no test/ folder (layout: train/<class>/*.png, test/<class>/)")
    mapping, names = label_map(root / "train", classes)
    files: dict[str, list[tuple[Path, int]]] = {}
    for split in SPLITS:
        split_dir = root / split
        if not split_dir.is_dir():
            continue
        folders = _folders(split_dir)
        if not folders:
            raise ConfigError("dataset.root", str(root), f"{split}/ has no class folders")
        files[split] = []
        for folder in folders:
            images = image_files(folder, root, strict)
            if not images:
                raise ConfigError("dataset.root", str(folder), "is an empty class folder (no .png or .jpg files)")
            label = _label_of(folder.name, mapping, split)
            files[split] += [(p, label) for p in images]
    return root, files, names


def cache_key(files: dict, image_size: int, channels: int, names: list[str], max_pixels: int) -> str:
    digest = hashlib.sha256(json.dumps([CACHE_FORMAT, image_size, channels, names, max_pixels]).encode())
    for split, entries in files.items():
        for path, label in entries:
            stat = path.stat()
            digest.update(f"{split}\0{path}\0{label}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]


def default_cache_dir(root: Path) -> Path:
    """Beside the data when that folder is writable, else the user's cache folder."""
    beside = root / ".expframe-cache"
    if os.access(root, os.W_OK) or os.access(beside, os.W_OK):
        return beside
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "expframe" / "images"


class TooLarge(ValueError):
    """An image whose header declares more pixels than dataset.max_pixels: never decoded."""


def check_dimensions(path: Path, max_pixels: int) -> None:
    """Reads the header only (PIL opens lazily): a 274-byte PNG may claim 100000 x 100000 pixels, and
    decoding it would take 10 GB or crash the decoder."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as image:
                width, height = image.size
        except Image.DecompressionBombError:
            declared = 2 * (Image.MAX_IMAGE_PIXELS or 0)
            raise TooLarge(
                f"its header declares over {declared:,} pixels, over dataset.max_pixels={max_pixels:,}"
            ) from None
    if width * height > max_pixels:
        raise TooLarge(f"{width} x {height} pixels, over dataset.max_pixels={max_pixels:,}")


def skip_reason(error: BaseException) -> str:
    return str(error) if isinstance(error, TooLarge) else f"not a readable image: {short_reason(error, 120)}"


def check_headers(files: dict[str, list[tuple[Path, int]]], max_pixels: int | None) -> None:
    """dataset.strict=true: the first file whose header is unreadable or too large, as one error."""
    for entries in files.values():
        for path, _ in entries:
            try:
                check_dimensions(path, max_pixels or DEFAULT_MAX_PIXELS)
            except (OSError, ValueError, SyntaxError) as e:
                raise ConfigError("dataset.strict", True, f"{path}: {skip_reason(e)}") from None


def decode(path: Path, image_size: int, channels: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """One file as a uint8 tensor (channels, size, size), resized with antialiasing; its size is read
    from its header first."""
    from torchvision.io import ImageReadMode, decode_image
    from torchvision.transforms.v2.functional import resize

    check_dimensions(path, max_pixels)
    mode = ImageReadMode.GRAY if channels == 1 else ImageReadMode.RGB
    image = decode_image(str(path), mode=mode)
    return resize(image, [image_size, image_size], antialias=True)


def decode_all(entries: list[tuple[Path, int]], image_size: int, channels: int, strict: bool, max_pixels: int):
    """Decoded images and labels, and `path (why)` for each file skipped."""

    def one(entry):
        try:
            return decode(entry[0], image_size, channels, max_pixels)
        except (RuntimeError, OSError, ValueError, SyntaxError) as e:  # PIL raises SyntaxError for bad headers
            why = skip_reason(e)
            if strict:
                raise ConfigError("dataset.strict", True, f"{entry[0]}: {why}") from None
            return f"{entry[0]} ({why})"

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        decoded = list(pool.map(one, entries))
    kept = [(image, label) for image, (_, label) in zip(decoded, entries, strict=True) if not isinstance(image, str)]
    skipped = [image for image in decoded if isinstance(image, str)]
    images = torch.stack([i for i, _ in kept]) if kept else torch.empty(0, channels, image_size, image_size)
    labels = torch.tensor([label for _, label in kept], dtype=torch.int64)
    return images.to(torch.uint8), labels, skipped


def _decode_splits(files: dict, image_size: int, channels: int, strict: bool, max_pixels: int) -> dict:
    cache: dict = {"skipped": []}
    for split, entries in files.items():
        images, labels, skipped = decode_all(entries, image_size, channels, strict, max_pixels)
        if not len(labels):
            raise ConfigError("dataset.root", str(entries[0][0].parents[1]), "holds no readable image")
        cache[split] = {"images": images, "labels": labels}
        cache["skipped"] += skipped
    return cache


def _positive_label(positive: object, names: list[str]) -> int:
    """`dataset.positive`: a label, a class (folder) name, or null for label 1."""
    if positive is None:
        return 1
    if isinstance(positive, int) and not isinstance(positive, bool) and 0 <= positive < len(names):
        return positive
    if isinstance(positive, str) and positive in names:
        return names.index(positive)
    raise ConfigError("dataset.positive", positive, f"must be a label 0-{len(names) - 1} or one of {', '.join(names)}")


def check_decoding(image_size: object, channels: object) -> None:
    if channels not in (1, 3):
        raise ConfigError("dataset.channels", channels, "must be 1 (grayscale) or 3 (RGB)")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 8:
        raise ConfigError("dataset.image_size", image_size, "must be an integer >= 8 (pixels per side)")


def decoded(
    where: Path,
    files: dict[str, list[tuple[Path, int]]],
    names: list[str],
    image_size: int,
    channels: int,
    cache_dir: str | None,
    strict: bool,
    max_pixels: int,
) -> dict:
    """Every split's images and labels, from the cache when these files and settings were decoded
    before, else decoded now and cached (one file, keyed by the file list, sizes, mtimes and settings)."""
    folder = project_path(cache_dir) if cache_dir else default_cache_dir(where)
    path = folder / f"{cache_key(files, image_size, channels, names, max_pixels)}.pt"
    try:
        cache = torch.load(path, mmap=True, weights_only=True)
        log.info("image cache %s: %d images, decoded before", path, sum(len(cache[s]["labels"]) for s in files))
    except (OSError, RuntimeError, KeyError, EOFError):
        cache = _decode_splits(files, image_size, channels, strict, max_pixels)
        count = sum(len(cache[s]["labels"]) for s in files)
        buf = io.BytesIO()
        torch.save(cache, buf)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            write_atomic(path, buf.getvalue())
            log.info("image cache %s written: %d images decoded", path, count)
        except OSError as e:  # a full disk or a folder we may not write: this run has its images
            log.warning(
                "image cache %s not written (%s): %d images decoded, the next run decodes them again",
                path,
                e.strerror or e,
                count,
            )
    if cache["skipped"]:
        if strict:
            raise ConfigError("dataset.strict", True, f"{cache['skipped'][0]}: skipped, and strict refuses that")
        first = ", ".join(cache["skipped"][:3])
        log.warning("skipped %d unreadable image file(s): %s", len(cache["skipped"]), first)
    return cache


def image_folder(
    root: str | None,
    image_size: int,
    channels: int,
    classes: dict | None = None,
    positive: object = None,
    cache_dir: str | None = None,
    strict: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> RawSplits:
    """uint8 NCHW images; a `val/` folder's images follow the training images (`val_size` of them)."""
    check_decoding(image_size, channels)
    where, files, names = list_files(root, dict(classes) if classes is not None else None, strict)
    cache = decoded(where, files, names, image_size, channels, cache_dir, strict, max_pixels)
    train, test = cache["train"], cache["test"]
    val = cache.get("val")
    train_x, train_y = train["images"], train["labels"]
    if val is not None:
        train_x, train_y = torch.cat([train_x, val["images"]]), torch.cat([train_y, val["labels"]])
    return RawSplits(
        train_x,
        train_y,
        test["images"],
        test["labels"],
        len(names),
        class_names=tuple(names),
        positive=_positive_label(positive, names),
        val_size=None if val is None else len(val["labels"]),
    )
