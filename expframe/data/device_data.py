"""Normalise once, move to the device once, and keep the result for every later job in the process."""

import logging
from dataclasses import dataclass

import torch
from omegaconf import DictConfig, OmegaConf

from expframe.build import build
from expframe.data.image_store import ImageStore, channel_stats
from expframe.data.raw import RawSplits

log = logging.getLogger("expframe")


@dataclass(frozen=True)
class DeviceData:
    # float tensors, or an ImageStore (uint8 images normalised per batch) for image folders
    train_x: torch.Tensor | ImageStore
    train_y: torch.Tensor
    test_x: torch.Tensor | ImageStore
    test_y: torch.Tensor
    num_classes: int
    # axis names of train_x, batch first: "NCHW" for images, "NF" for feature vectors
    layout: str = "NCHW"
    class_names: tuple[str, ...] | None = None
    positive: int = 1
    # a fixed validation set: the last `val_size` samples of the training set
    val_size: int | None = None
    # float images: the per-channel mean and std (1, C, 1, 1) of their [0, 1] pixels that normalised them
    pixel_mean: torch.Tensor | None = None
    pixel_std: torch.Tensor | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])

    @property
    def streamed(self) -> bool:
        return isinstance(self.train_x, ImageStore) and self.train_x.streamed

    def pixels(self, x: "torch.Tensor | ImageStore", idx: torch.Tensor | None = None) -> torch.Tensor:
        """Rows of `x` (the test set, or the training set's `idx`) as 8-bit pixels on the device (N, C, H, W):
        an image folder's own bytes, the other sets' [0, 1] values rounded to 1/255 (exact for MNIST's,
        which are k/255)."""
        if isinstance(x, ImageStore):
            images = x.images if idx is None else x.images[idx.to(x.images.device)]
            return images.to(x.device)
        return self.batch_pixels(x if idx is None else x[idx.to(x.device)])

    def batch_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """A normalised batch (the model's inputs) back to its 8-bit images, on its device."""
        if isinstance(self.train_x, ImageStore):
            store = self.train_x
            pixels = x * store.std.to(x.device) + store.mean.to(x.device)
        else:
            pixels = (x * self.pixel_std.to(x.device) + self.pixel_mean.to(x.device)) * 255
        return pixels.round_().clamp_(0, 255).to(torch.uint8)

    def test_pixels(self) -> torch.Tensor:
        return self.pixels(self.test_x)

    def normalise_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """8-bit images -> the model's inputs, normalised as the test set is."""
        if isinstance(self.test_x, ImageStore):
            return self.test_x.normalise(pixels)
        return (pixels.float() / 255 - self.pixel_mean) / self.pixel_std


_CACHE: dict[tuple[str, str], DeviceData] = {}


def normalisation(raw: RawSplits) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean and std a run normalises with, per channel (C) or feature (F), over the batch and
    spatial axes of the source's layout and the whole training set (a val/ folder's images included),
    so they do not move with the seed; on the source's scale (0-255 for uint8 images)."""
    if raw.train_x.dtype == torch.uint8:
        return channel_stats(raw.train_x)
    dims = [i for i, axis in enumerate(raw.layout) if axis not in "CF"]
    return raw.train_x.mean(dim=dims, keepdim=True), raw.train_x.std(dim=dims, keepdim=True).clamp_min(1e-6)


def load(dataset: DictConfig, device: torch.device) -> DeviceData:
    """Statistics per channel (C) or feature (F), over the batch and spatial axes of the source's
    layout, from the whole training set, so they do not move with the seed. uint8 images stay
    uint8 (resident on the device, or streamed above `dataset.resident_max_mb`)."""
    resident_max_mb = dataset.get("resident_max_mb")
    key = (OmegaConf.to_yaml(dataset.source, resolve=True) + f"{resident_max_mb}", str(device))
    if key not in _CACHE:
        raw = build(dataset.source)
        about = {"class_names": raw.class_names, "positive": raw.positive, "val_size": raw.val_size}
        mean, std = normalisation(raw)
        if raw.train_x.dtype == torch.uint8:
            size_mb = (raw.train_x.numel() + raw.test_x.numel()) / 2**20
            streamed = resident_max_mb is not None and size_mb > resident_max_mb
            workers = dataset.get("workers") or 0
            train_x = ImageStore(raw.train_x, mean, std, device, streamed, workers)
            test_x = ImageStore(raw.test_x, mean, std, device, streamed, workers)
            if streamed:
                log.info(
                    "%.0f MB of images > dataset.resident_max_mb=%s: streamed from the cache", size_mb, resident_max_mb
                )
        else:
            train_x, test_x = ((raw.train_x - mean) / std).to(device), ((raw.test_x - mean) / std).to(device)
            if raw.layout == "NCHW":
                about.update(pixel_mean=mean.to(device), pixel_std=std.to(device))
        _CACHE[key] = DeviceData(
            train_x, raw.train_y.to(device), test_x, raw.test_y.to(device), raw.num_classes, raw.layout, **about
        )
    return _CACHE[key]


def take(x: torch.Tensor | ImageStore, idx: torch.Tensor) -> torch.Tensor | ImageStore:
    """Rows of a data tensor; an image store stays uint8 (the validation set of an image folder)."""
    return x.subset(idx) if isinstance(x, ImageStore) else x[idx]


def split_indices(
    n: int, val_fraction: float, seed: int, val_size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded train/validation split of the training set, as index tensors (no copies); with a fixed
    validation set (`val_size` last samples), that one."""
    if val_size:
        return torch.arange(n - val_size), torch.arange(n - val_size, n)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = max(1, round(n * val_fraction))
    return order[n_val:], order[:n_val]
