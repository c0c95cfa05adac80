"""Normalise once, move to the device once, and keep the result for every later job in the process."""

from dataclasses import dataclass

import torch
from omegaconf import DictConfig, OmegaConf

from expframe.build import build


@dataclass(frozen=True)
class DeviceData:
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    # axis names of train_x, batch first: "NCHW" for images, "NF" for feature vectors
    layout: str = "NCHW"

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])


_CACHE: dict[tuple[str, str], DeviceData] = {}


def load(dataset: DictConfig, device: torch.device) -> DeviceData:
    """Statistics per channel (C) or feature (F), over the batch and spatial axes of the source's
    layout, from the whole training set, so they do not move with the seed."""
    key = (OmegaConf.to_yaml(dataset.source, resolve=True), str(device))
    if key not in _CACHE:
        raw = build(dataset.source)
        dims = [i for i, axis in enumerate(raw.layout) if axis not in "CF"]
        mean = raw.train_x.mean(dim=dims, keepdim=True)
        std = raw.train_x.std(dim=dims, keepdim=True).clamp_min(1e-6)
        _CACHE[key] = DeviceData(
            ((raw.train_x - mean) / std).to(device),
            raw.train_y.to(device),
            ((raw.test_x - mean) / std).to(device),
            raw.test_y.to(device),
            raw.num_classes,
            raw.layout,
        )
    return _CACHE[key]


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded train/validation split of the training set, as index tensors (no copies)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = max(1, round(n * val_fraction))
    return order[n_val:], order[:n_val]
