"""Training-batch augmentation on the device (`augment` group), each variant drawing from the run's own
seeded stream, so two runs with one seed see the same augmented batches and a checkpoint resumes it.

- `basic`, `crop`: random resized crop and horizontal flip for a whole batch in one `grid_sample`.
- `randaugment`, `trivialaugment`: torchvision.transforms.v2's policies on the batch's 8-bit pixels
  (the inputs un-normalised, augmented, normalised again), one policy draw per group of
  `augment.group` samples (torchvision draws one operation per call).
- `mixup`, `cutmix`: torchvision.transforms.v2's, on the normalised batch and its labels; the
  targets become soft (the two labels' shares), which cross-entropy takes as probabilities.

Every variant is `(inputs, labels) -> (inputs, targets)`: hard labels, or soft targets for the mixes.
"""

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from expframe.errors import ConfigError
from expframe.train.losses import takes_soft_targets

PIXEL_POLICIES = ("randaugment", "trivialaugment")
MIXES = ("mixup", "cutmix")
CROPS = ("basic", "crop")
NAMES = ("none", *CROPS, *PIXEL_POLICIES, *MIXES)
# RandAugment's operations (torchvision's list): more than that repeats one
MAX_OPS = 14
MAGNITUDE_BINS = 31


class RandomResizedCropFlip:
    """torchvision's RandomResizedCrop (area `scale`, aspect `ratio`) and RandomHorizontalFlip(`flip`),
    as one affine resampling per batch (bilinear; the crop is resized back to the input size)."""

    def __init__(self, scale: list[float], ratio: list[float], flip: float, generator: torch.Generator) -> None:
        self.scale, self.log_ratio, self.flip, self.generator = scale, [math.log(r) for r in ratio], flip, generator

    def _uniform(self, n: int, low: float, high: float, device: torch.device) -> torch.Tensor:
        return torch.rand(n, generator=self.generator, device=device) * (high - low) + low

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
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
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False), y


class _OwnStream:
    """torchvision's transforms draw from torch's global generator; each call here runs them on a
    stream of the run's own (seeded, checkpointed), leaving the global one as it was."""

    def __init__(self, generator: torch.Generator) -> None:
        self.generator = generator

    def draw(self, transform: Callable, *args):
        seed = int(torch.randint(2**62, (1,), generator=self.generator))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return transform(*args)


class PixelPolicy(_OwnStream):
    """RandAugment or TrivialAugmentWide on 8-bit pixels, one draw per group of `group` samples."""

    def __init__(self, policy: Callable, group: int, pixels: Callable, normalise: Callable, generator) -> None:
        super().__init__(generator)
        self.policy, self.group, self.pixels, self.normalise = policy, group, pixels, normalise

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = self.pixels(x)
        out = torch.cat([self.draw(self.policy, part) for part in pixels.split(self.group)])
        return self.normalise(out).to(x.dtype), y


class Mix(_OwnStream):
    """MixUp or CutMix over the batch (each sample with its neighbour), soft targets out."""

    def __init__(self, mix: Callable, generator: torch.Generator) -> None:
        super().__init__(generator)
        self.mix = mix

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.draw(self.mix, x, y)


Augment = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def mixes(settings: DictConfig) -> bool:
    return settings.name in MIXES


def build_augment(
    settings: DictConfig,
    seed: int,
    device: torch.device,
    num_classes: int,
    pixels: Callable[[torch.Tensor], torch.Tensor],
    normalise: Callable[[torch.Tensor], torch.Tensor],
) -> Augment | None:
    """`pixels`: normalised inputs -> their 8-bit images; `normalise`: back (the data set's own)."""
    from torchvision.transforms import v2

    if settings.name == "none":
        return None
    if settings.name in CROPS:
        generator = torch.Generator(device=device).manual_seed(seed)
        return RandomResizedCropFlip(list(settings.scale), list(settings.ratio), settings.flip, generator)
    generator = torch.Generator().manual_seed(seed)
    if settings.name == "randaugment":
        policy = v2.RandAugment(num_ops=settings.num_ops, magnitude=settings.magnitude)
        return PixelPolicy(policy, settings.group, pixels, normalise, generator)
    if settings.name == "trivialaugment":
        return PixelPolicy(v2.TrivialAugmentWide(), settings.group, pixels, normalise, generator)
    kind = v2.MixUp if settings.name == "mixup" else v2.CutMix
    return Mix(kind(alpha=settings.alpha, num_classes=num_classes), generator)


def _int(key: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(key, value, f"must be an integer in [{low}, {high}]")


def check_settings(
    settings: DictConfig, loss: DictConfig | None = None, input_shape: list[int] | None = None, dataset: str = ""
) -> None:
    """`input_shape`: one sample's declared shape; every augmentation here needs images (C, H, W)."""
    if settings.name not in NAMES:
        raise ConfigError("augment.name", settings.name, f"must be one of {', '.join(NAMES)}")
    if settings.name != "none" and input_shape is not None and len(input_shape) != 3:
        raise ConfigError(
            "augment", settings.name, f"needs images (C, H, W); dataset={dataset} holds vectors of {list(input_shape)}"
        )
    if settings.name in CROPS:
        scale, ratio = list(settings.scale), list(settings.ratio)
        if len(scale) != 2 or not 0 < scale[0] <= scale[1] <= 1:
            raise ConfigError("augment.scale", scale, "must be [low, high] with 0 < low <= high <= 1 (area kept)")
        if len(ratio) != 2 or not 0 < ratio[0] <= ratio[1]:
            raise ConfigError("augment.ratio", ratio, "must be [low, high] with 0 < low <= high (width / height)")
        if isinstance(settings.flip, bool) or not 0 <= settings.flip <= 1:
            raise ConfigError("augment.flip", settings.flip, "must be a probability in [0, 1]")
    if settings.name in PIXEL_POLICIES:
        _int("augment.group", settings.group, 1, 2**20)
    if settings.name == "randaugment":
        _int("augment.num_ops", settings.num_ops, 1, MAX_OPS)
        _int("augment.magnitude", settings.magnitude, 0, MAGNITUDE_BINS - 1)
    if settings.name in MIXES:
        alpha = settings.alpha
        if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 < alpha < math.inf:
            raise ConfigError("augment.alpha", alpha, "must be a finite number > 0 (the Beta distribution's)")
        if loss is not None and not takes_soft_targets(loss):
            raise ConfigError(
                "augment",
                settings.name,
                f"trains on soft targets; loss {loss.get('_target_')} cannot take them (the loss group's default can)",
            )
