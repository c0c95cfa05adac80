"""New data a trained model meets after training, named the same way by `expframe-monitor --data` and
`retrain.new`: the run's own `test` or `val` split (clean), either one corrupted by one of the shift
group's corruptions (`test+gaussian_noise:4`: a drift simulated in one command), or a folder of images.

A folder holds `<class>/*.png|jpg` (labelled: the class folders must be among the run's classes) or
images directly (unlabelled: no accuracy, no retraining). Its images are decoded as the run's were:
resized to the run's `dataset.image_size` when the run read an image folder, otherwise they must
have the run's shape already (a 64x64 RGB picture is not a 28x28 digit, and is refused, not squeezed).
"""

from dataclasses import dataclass
from pathlib import Path

import torch

from expframe.data.corruption_table import SEVERITIES, TABLE
from expframe.data.corruptions import corrupt
from expframe.data.device_data import DeviceData, split_indices
from expframe.data.image_folder import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, decode_all, image_files, skip_reason
from expframe.errors import ConfigError

SPLITS = ("test", "val")


@dataclass(frozen=True)
class NewDataSpec:
    # "test", "val", or None for a folder
    split: str | None
    corruption: tuple[str, int] | None
    folder: Path | None

    def __str__(self) -> str:
        where = self.split or str(self.folder)
        return where + (f"+{self.corruption[0]}:{self.corruption[1]}" if self.corruption else "")


@dataclass(frozen=True)
class NewData:
    # 8-bit images (N, C, H, W) on the data's device
    pixels: torch.Tensor
    # labels, or None for an unlabelled folder
    labels: torch.Tensor | None
    # which of the run's split's samples these are (indices into that split), None for a folder
    indices: torch.Tensor | None


def parse_corruption(key: str, text: str, shown: str | None = None) -> tuple[str, int]:
    """`NAME:SEVERITY`; `shown`: the value named when refused (the whole `test+NAME:SEVERITY`)."""
    name, _, severity = text.partition(":")
    if name not in TABLE or not severity.isdigit() or int(severity) not in SEVERITIES:
        known = ", ".join(TABLE)
        raise ConfigError(key, shown or text, f"corruption must be NAME:SEVERITY, NAME one of {known}, SEVERITY 1-5")
    return name, int(severity)


def parse(key: str, text: object, corruption: str | None = None, corruption_key: str = "--corrupt") -> NewDataSpec:
    """`test`, `val`, `test+NAME:SEVERITY`, or a folder (its own path: a folder named `test` is `./test`).
    `corruption`: given apart (the monitor's `--corrupt`, named `corruption_key` when refused)."""
    if not isinstance(text, str) or not text:
        raise ConfigError(key, text, "must be test, val, test+NAME:SEVERITY (val+...) or an image folder")
    where, plus, inline = text.partition("+")
    if where in SPLITS:
        if plus and corruption:
            raise ConfigError(key, text, "names a corruption already; give it once")
        if plus:
            return NewDataSpec(where, parse_corruption(key, inline, text), None)
        return NewDataSpec(where, parse_corruption(corruption_key, corruption) if corruption else None, None)
    folder = Path(text).expanduser()
    if not folder.is_dir():
        raise ConfigError(key, text, "must be test, val, test+NAME:SEVERITY (val+...) or an existing image folder")
    return NewDataSpec(None, parse_corruption(corruption_key, corruption) if corruption else None, folder)


def _pixels_of(data: DeviceData, split: str, val_idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if split == "test":
        return data.test_pixels(), data.test_y
    return data.pixels(data.train_x, val_idx), data.train_y[val_idx.to(data.train_y.device)]


def _folder_images(
    key: str, folder: Path, shape: tuple[int, ...], resize: bool, class_names: list[str]
) -> tuple[torch.Tensor, torch.Tensor | None]:
    classes = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    loose = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if classes and loose:
        raise ConfigError(key, str(folder), "mixes class folders and loose images; use one layout")
    unknown = [p.name for p in classes if p.name not in class_names]
    if unknown:
        raise ConfigError(
            key, str(folder), f"has class folder {unknown[0]!r}; the run's classes are {', '.join(class_names)}"
        )
    if classes:
        entries = [(p, class_names.index(c.name)) for c in classes for p in image_files(c, folder, strict=False)]
    else:
        entries = [(p, -1) for p in image_files(folder, folder, strict=False) if p.parent == folder]
    if not entries:
        raise ConfigError(key, str(folder), "holds no .png or .jpg images")
    channels, size = shape[0], shape[-1]
    if not resize:
        _check_shapes(key, entries, shape)
    found = decode_all(entries, size, channels, strict=False, max_pixels=DEFAULT_MAX_PIXELS)
    if found["skipped"]:
        raise ConfigError(key, str(folder), f"holds a file that is not a readable image: {found['skipped'][0]}")
    return found["images"], (found["labels"] if classes else None)


def _check_shapes(key: str, entries: list, shape: tuple[int, ...]) -> None:
    """A run on a fixed-shape set takes images of that shape as they are (its training never resized)."""
    from PIL import Image

    for path, _ in entries:
        try:
            with Image.open(path) as image:
                found = (len(image.getbands()), image.height, image.width)
        except (OSError, ValueError, SyntaxError) as e:  # PIL's UnidentifiedImageError is an OSError
            raise ConfigError(key, str(path), f"is not a readable image ({skip_reason(e)})") from None
        if found != tuple(shape):
            raise ConfigError(
                key,
                str(path),
                f"is {found[0]}x{found[1]}x{found[2]} (channels x height x width); the run's model takes "
                f"{'x'.join(map(str, shape))}",
            )


def load_new_data(key: str, spec: NewDataSpec, data: DeviceData, val_idx: torch.Tensor, resize: bool) -> NewData:
    """The new data's 8-bit images (corrupted when the spec says so) and labels. `val_idx`: the run's
    validation split; `resize`: the run read an image folder (its images were resized)."""
    if data.layout != "NCHW":
        raise ConfigError(key, str(spec), f"needs images; this run's data are {data.layout} feature vectors")
    if spec.split:
        pixels, labels = _pixels_of(data, spec.split, val_idx)
        indices = torch.arange(len(labels))
    else:
        names = list(data.class_names or [str(c) for c in range(data.num_classes)])
        images, labels = _folder_images(key, spec.folder, data.input_shape, resize, names)
        pixels, indices = images.to(data.train_y.device), None
        labels = None if labels is None else labels.to(data.train_y.device)
    if spec.corruption:
        pixels = corrupt(pixels, *spec.corruption)
    return NewData(pixels, labels, indices)


def run_split(data: DeviceData, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The run's own (train, validation) split, as its training drew it."""
    return split_indices(len(data.train_y), val_fraction, seed, data.val_size)
