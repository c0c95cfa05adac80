"""Training-batch augmentation on the device (`augment` group): random resized crop and horizontal
flip for a whole batch in one `grid_sample`, drawn from the run's own seeded generator, so no
per-sample Python transform runs and two runs with one seed see the same crops.
"""

import math

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from expframe.errors import ConfigError


class RandomResizedCropFlip:
    """torchvision's RandomResizedCrop (area `scale`, aspect `ratio`) and RandomHorizontalFlip(`flip`),
    as one affine resampling per batch (bilinear; the crop is resized back to the input size)."""

    def __init__(self, scale: list[float], ratio: list[float], flip: float, generator: torch.Generator) -> None:
        self.scale, self.log_ratio, self.flip, self.generator = scale, [math.log(r) for r in ratio], flip, generator

    def _uniform(self, n: int, low: float, high: float, device: torch.device) -> torch.Tensor:
        return torch.rand(n, generator=self.generator, device=device) * (high - low) + low

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        n, device = len(x), x.device
        area = self._uniform(n, *self.scale, device)
        aspect = self._uniform(n, *self.log_ratio, device).exp()
        width = (area * aspect).sqrt().clamp(max=1.0)
        height = (area / aspect).sqrt().clamp(max=1.0)
        cx = (torch.rand(n, generator=self.generator, device=device) * 2 - 1) * (1 - width)
        cy = (torch.rand(n, generator=self.generator, device=device) * 2 - 1) * (1 - height)
        flip = torch.rand(n, generator=self.generator, device=device) < self.flip
        sx = torch.where(flip, -width, width)
        zero = torch.zeros_like(width)
        theta = torch.stack([torch.stack([sx, zero, cx], 1), torch.stack([zero, height, cy], 1)], 1)
        grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def build_augment(settings: DictConfig, seed: int, device: torch.device) -> RandomResizedCropFlip | None:
    if settings.name == "none":
        return None
    generator = torch.Generator(device=device).manual_seed(seed)
    return RandomResizedCropFlip(list(settings.scale), list(settings.ratio), settings.flip, generator)


def check_settings(settings: DictConfig) -> None:
    if settings.name == "none":
        return
    scale, ratio = list(settings.scale), list(settings.ratio)
    if len(scale) != 2 or not 0 < scale[0] <= scale[1] <= 1:
        raise ConfigError("augment.scale", scale, "must be [low, high] with 0 < low <= high <= 1 (area kept)")
    if len(ratio) != 2 or not 0 < ratio[0] <= ratio[1]:
        raise ConfigError("augment.ratio", ratio, "must be [low, high] with 0 < low <= high (width / height)")
    if isinstance(settings.flip, bool) or not 0 <= settings.flip <= 1:
        raise ConfigError("augment.flip", settings.flip, "must be a probability in [0, 1]")
