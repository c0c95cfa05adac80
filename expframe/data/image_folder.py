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

from expframe.data.raw import ImageFiles, RawSplits, project_path
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
# 2: each split also keeps its files' names, header sizes and modes (the data report reads them)
CACHE_FORMAT = 2
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
    # rglob does not descend into linked folders: below the folder (resolved once), only a file that is
    # a link itself can lead elsewhere, so only links are resolved (5,000 resolves cost 0.5 s)
    folder_inside = folder.resolve().is_relative_to(inside)
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()):
        ok = path.resolve().is_relative_to(inside) if path.is_symlink() or not folder_inside else True
        (kept if ok else outside).append(path)
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


class Empty(ValueError):
    """A file of 0 bytes (an interrupted copy or download)."""


def check_dimensions(path: Path, max_pixels: int) -> tuple[int, int, str]:
    """Reads the header only (PIL opens lazily): a 274-byte PNG may claim 100000 x 100000 pixels, and
    decoding it would take 10 GB or crash the decoder. Returns the file's height, width and PIL mode
    (L, RGB, RGBA, I;16, ...): what the data report says of the files before decoding."""
    from PIL import Image

    if path.stat().st_size == 0:
        raise Empty("an empty file (0 bytes)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as image:
                (width, height), mode = image.size, image.mode
        except Image.DecompressionBombError:
            declared = 2 * (Image.MAX_IMAGE_PIXELS or 0)
            raise TooLarge(
                f"too large: its header declares over {declared:,} pixels, over dataset.max_pixels={max_pixels:,}"
            ) from None
    if width * height > max_pixels:
        raise TooLarge(f"too large: {width} x {height} pixels, over dataset.max_pixels={max_pixels:,}")
    return height, width, mode


def skip_reason(error: BaseException) -> str:
    if isinstance(error, TooLarge | Empty):
        return str(error)
    return f"not a readable image: {short_reason(error, 120)}"


def check_headers(files: dict[str, list[tuple[Path, int]]], max_pixels: int | None) -> None:
    """dataset.strict=true: the first file whose header is unreadable or too large, as one error."""
    for entries in files.values():
        for path, _ in entries:
            try:
                check_dimensions(path, max_pixels or DEFAULT_MAX_PIXELS)
            except (OSError, ValueError, SyntaxError) as e:
                raise ConfigError("dataset.strict", True, f"{path}: {skip_reason(e)}") from None


def decode(
    path: Path, image_size: int, channels: int, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[torch.Tensor, tuple[int, int, str]]:
    """One file as a uint8 tensor (channels, size, size), resized with antialiasing, and its header's
    height, width and mode, read first."""
    from torchvision.io import ImageReadMode, decode_image
    from torchvision.transforms.v2.functional import resize

    header = check_dimensions(path, max_pixels)
    mode = ImageReadMode.GRAY if channels == 1 else ImageReadMode.RGB
    image = decode_image(str(path), mode=mode)
    return resize(image, [image_size, image_size], antialias=True), header


def decode_all(
    entries: list[tuple[Path, int]], image_size: int, channels: int, strict: bool, max_pixels: int
) -> dict[str, object]:
    """The decoded files of one split: images, labels, the kept files and their header facts
    (`files`, `sizes` (N, 2) height and width, `modes`), and `path (why)` for each file skipped."""

    def one(entry):
        try:
            return decode(entry[0], image_size, channels, max_pixels)
        except (RuntimeError, OSError, ValueError, SyntaxError) as e:  # PIL raises SyntaxError for bad headers
            why = skip_reason(e)
            if strict:
                raise ConfigError("dataset.strict", True, f"{entry[0]}: {why}") from None
            return f"{entry[0]} ({why})"

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        results = list(pool.map(one, entries))
    kept = [(out, entry) for out, entry in zip(results, entries, strict=True) if not isinstance(out, str)]
    images = [image for (image, _), _ in kept]
    return {
        "images": torch.stack(images).to(torch.uint8) if kept else torch.empty(0, channels, image_size, image_size),
        "labels": torch.tensor([label for _, (_, label) in kept], dtype=torch.int64),
        "files": [str(path) for _, (path, _) in kept],
        "sizes": torch.tensor([header[:2] for (_, header), _ in kept], dtype=torch.int32).reshape(-1, 2),
        "modes": [header[2] for (_, header), _ in kept],
        "skipped": [out for out in results if isinstance(out, str)],
    }


def _decode_splits(files: dict, image_size: int, channels: int, strict: bool, max_pixels: int) -> dict:
    cache: dict = {"skipped": []}
    for split, entries in files.items():
        decoded_split = decode_all(entries, image_size, channels, strict, max_pixels)
        if not len(decoded_split["labels"]):
            raise ConfigError("dataset.root", str(entries[0][0].parents[1]), "holds no readable image")
        cache["skipped"] += decoded_split.pop("skipped")
        cache[split] = decoded_split
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
    return splits_from_cache(cache, where, names, _positive_label(positive, names))


def splits_from_cache(cache: dict, root: Path, names: list[str], positive: int) -> RawSplits:
    """The decoded splits as a run reads them: a `val/` split's images follow the training images
    (`val_size` of them); the files' names (relative to `root`), header sizes and modes ride along."""
    train, val, test = cache["train"], cache.get("val"), cache["test"]
    pool = [train] if val is None else [train, val]

    def names_of(parts: list[dict]) -> list[str]:
        return [str(Path(f).relative_to(root)) for part in parts for f in part["files"]]

    files = ImageFiles(
        train_files=names_of(pool),
        test_files=names_of([test]),
        train_sizes=torch.cat([p["sizes"] for p in pool]),
        test_sizes=test["sizes"],
        train_modes=[m for p in pool for m in p["modes"]],
        test_modes=list(test["modes"]),
        skipped=[str(s) for s in cache["skipped"]],
        root=str(root),
    )
    return RawSplits(
        torch.cat([p["images"] for p in pool]),
        torch.cat([p["labels"] for p in pool]),
        test["images"],
        test["labels"],
        len(names),
        class_names=tuple(names),
        positive=positive,
        val_size=None if val is None else len(val["labels"]),
        files=files,
    )
