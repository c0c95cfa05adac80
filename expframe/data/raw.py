"""What every data source returns (`RawSplits`) and where relative paths point (`project_path`):
shared by the embedded and torchvision sources (sources.py), image folders (image_folder.py) and
models that read weight files, so none of them imports another."""

from dataclasses import dataclass
from pathlib import Path

import torch

from expframe import PROJECT_ROOT


@dataclass
class ImageFiles:
    """What an image folder's files were before decoding, row for row with the decoded tensors (the
    training rows include a val/ folder's, last): names relative to `root`, header height and width,
    PIL mode; and `path (why)` for each file skipped. The data report's per-file view."""

    train_files: list[str]
    test_files: list[str]
    train_sizes: torch.Tensor
    test_sizes: torch.Tensor
    train_modes: list[str]
    test_modes: list[str]
    skipped: list[str]
    root: str


@dataclass
class RawSplits:
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    layout: str = "NCHW"
    class_names: tuple[str, ...] | None = None
    # the label binary figures (F1, sensitivity, ...) treat as positive
    positive: int = 1
    # a fixed validation set (an image folder's val/): the last `val_size` training samples
    val_size: int | None = None
    # image folders: the files behind the rows
    files: ImageFiles | None = None


def project_path(path: str) -> Path:
    """A relative `dataset.root` is relative to the project (the folder holding conf/ and train.py),
    not to wherever the command was started, so every job of a sweep, on any launcher, reads one folder."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else PROJECT_ROOT / p
