"""ImageNet-C's corruptions as batched tensor operations on the device.

The reference code (`imagecorruptions`, ImageNet-C's own) works on one PIL or numpy image at a time
with OpenCV, scikit-image and ImageMagick. Here a whole chunk of the test set is corrupted at once:
torchvision.transforms.v2's affine zoom and JPEG, kornia's separable Gaussian blur and filtering,
diamond-square plasma and HSV conversion, and a few torch lines where neither library has the
operation (shot noise is `torch.poisson`). Each function takes images in [0, 1] (N, C, H, W), one
severity's parameters (corruption_table.parameters) and a generator, the only source of randomness,
so the corrupted set depends on (corruption, severity, example) and nothing else; the result is
rounded to 8 bits, as the published corrupted sets are stored.

Where an operation differs from the reference, the docstring says how.
"""

import hashlib
import math
from collections.abc import Callable

import torch
import torch.nn.functional as nnf

from expframe.data.corruption_table import TABLE, parameters

# images corrupted per generator: the generator of chunk k is seeded by (corruption, severity, k), so
# an example's corruption never depends on how many images are corrupted at once elsewhere
CHUNK = 256


def _normal(shape: tuple[int, ...], gen: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.randn(shape, generator=gen, device=device)


def _uniform(shape: tuple[int, ...], gen: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(shape, generator=gen, device=device)


def _gray(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma of RGB (OpenCV's RGB2GRAY), the image itself for one channel."""
    if x.shape[1] != 3:
        return x.mean(1, keepdim=True)
    weights = torch.tensor([0.299, 0.587, 0.114], device=x.device).view(1, 3, 1, 1)
    return (x * weights).sum(1, keepdim=True)


def _blur(x: torch.Tensor, sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """scikit-image's `gaussian` (truncated at 4 sigma, reflected border) as kornia's separable blur."""
    if sigma <= 0:
        return x
    from kornia.filters import gaussian_blur2d

    radius = max(1, min(math.ceil(truncate * sigma), min(x.shape[-2:]) - 1))
    size = 2 * radius + 1
    return gaussian_blur2d(x, (size, size), (sigma, sigma), border_type="reflect")


def gaussian_noise(x: torch.Tensor, p: dict, gen: torch.Generator) -> torch.Tensor:
    return x + p["std"] * _normal(x.shape, gen, x.device)


def shot_noise(x: torch.Tensor, p: dict, gen: torch.Generator) -> torch.Tensor:
    return torch.poisson(x * p["photons"], generator=gen) / p["photons"]


def impulse_noise(x: torch.Tensor, p: dict, gen: torch.Generator) -> torch.Tensor:
    """scikit-image's salt and pepper: `amount` of the values replaced, half by 0 and half by 1 (one
    uniform draw decides both whether and which)."""
    draw = _uniform(x.shape, gen, x.device)
    return torch.where(draw < p["amount"], (draw >= p["amount"] / 2).to(x.dtype), x)


def speckle_noise(x: torch.Tensor, p: dict, gen: torch.Generator) -> torch.Tensor:
    return x + x * p["std"] * _normal(x.shape, gen, x.device)


def gaussian_blur(x: torch.Tensor, p: dict, gen: torch.Generator) -> torch.Tensor:
    return _blur(x, p["sigma"])


def _disk(radius: float, alias_sigma: float, device: torch.device) -> torch.Tensor:
    """ImageNet-C's defocus kernel: a disk of `radius`, normalised, anti-aliased by a 3x3 Gaussian of
    `alias_sigma` (5x5 above radius 8). Each pixel weighs the share of it the disk covers (16 x 16
    samples) where ImageNet-C counts whole pixels: the same kernel at 224 px, and a radius under a
    pixel still blurs a 28 px image a little, more at each severity."""
    half = math.ceil(radius + 0.5)
    sub = (torch.arange(16, device=device, dtype=torch.float32) + 0.5) / 16 - 0.5
    axis = (torch.arange(-half, half + 1, device=device, dtype=torch.float32).view(-1, 1) + sub).flatten()
    inside = ((axis.view(-1, 1) ** 2 + axis.view(1, -1) ** 2) <= radius**2).float()
    size = 2 * half + 1
    disk = inside.view(size, 16, size, 16).mean(dim=(1, 3))
    disk /= disk.sum()
    if alias_sigma <= 0:
        return disk
    from torchvision.transforms.v2.functional import gaussian_blur as blur

    taps = 3 if radius <= 8 else 5
    return blur(disk[None, None], kernel_size=[taps, taps], sigma=[alias_sigma, alias_sigma])[0, 0]


def defocus_blur(x: torch.Tensor, p: dict, gen: torch.Generator) -> torch.Tensor:
    """The disk kernel is cropped to the image when the image is smaller (OpenCV's filter2D reflects)."""
    from kornia.filters import filter2d

    kernel = _disk(p["radius"], p["alias_sigma"], x.device)
    half = kernel.shape[0] // 2
    keep = min(half, min(x.shape[-2:]) - 1)
    kernel = kernel[half - keep : half + keep + 1, half - keep : half + keep + 1]
    return filter2d(x, (kernel / kernel.sum())[None], border_type="reflect")


def glass_blur(x: torch.Tensor, p: dict, gen: torch.Generator) -> torch.Tensor:
    """Blur, shuffle pixels locally `iterations` times, blur. ImageNet-C swaps pixel pairs in a
    sequential loop over the image (minutes per 1,000 images); here each pixel takes the value at a
    random offset in [-max_delta, max_delta) in one batched resampling, the equivalent of a local
    shuffle (a pixel may be taken twice). Offsets are whole pixels, as ImageNet-C's, from 1 px up;
    a smaller (scaled) distance moves by a fraction of a pixel, bilinearly."""
    x = _blur(x, p["sigma"])
    n, _, h, w = x.shape
    delta = p["max_delta"]
    base = _pixels(h, w, x.device)
    for _ in range(int(p["iterations"])):
        offsets = (_uniform((n, h, w, 2), gen, x.device) * 2 - 1) * delta
        offsets = offsets.floor() if delta >= 1 else offsets
        x = _resample(x, base + offsets)
    return _blur(x, p["sigma"])


def _pixels(h: int, w: int, device: torch.device) -> torch.Tensor:
    """Every pixel's own position (H, W, 2 as x, y): where an unmoved pixel samples from."""
    ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    return torch.stack([xs, ys], -1).float()


def _resample(x: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """x sampled at pixel positions `source` (N, H, W, 2 as x, y), bilinear, borders reflected."""
    h, w = x.shape[-2:]
    grid = torch.stack([source[..., 0] / max(w - 1, 1), source[..., 1] / max(h - 1, 1)], -1) * 2 - 1
    return nnf.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=True)


def _motion(x: torch.Tensor, radius: float, sigma: float, angles: torch.Tensor) -> torch.Tensor:
    """ImageMagick's motion blur as ImageNet-C uses it (imagecorruptions' `_motion_blur`): the image
    shifted by each of `2 radius + 1` whole-pixel steps along the angle (degrees, one per image),
    weighted by a one-sided Gaussian of `sigma`, borders repeated. One gather per step, so a long
    blur costs its steps, not a kernel's area."""
    n, c, h, w = x.shape
    width = 2 * max(1, round(radius)) + 1
    taps = torch.arange(width, device=x.device, dtype=torch.float32)
    weights = torch.exp(-(taps**2) / (2 * max(sigma, 1e-3) ** 2))
    # steps past 4 sigma weigh < 0.03% of the first: left out
    width = int((weights > weights[0] * 3.4e-4).sum())
    weights = weights[:width] / weights[:width].sum()
    rad = torch.deg2rad(angles).view(n, 1, 1)
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    flat = x.flatten(2)
    out = torch.zeros_like(flat)
    for i in range(width):
        dy = -torch.ceil(i * torch.sin(rad) - 0.5).long()
        dx = -torch.ceil(i * torch.cos(rad) - 0.5).long()
        source = ((rows - dy).clamp(0, h - 1) * w + (cols - dx).clamp(0, w - 1)).view(n, 1, h * w)
        out += weights[i] * flat.gather(2, source.expand(n, c, h * w))
    return out.view(n, c, h, w)


def motion_blur(x: torch.Tensor, p: dict, gen: torch.Generator) -> torch.Tensor:
    angles = _uniform((len(x),), gen, x.device) * 90 - 45
    return _motion(x, p["radius"], p["sigma"], angles)


def _zoom(x: torch.Tensor, factor: float) -> torch.Tensor:
    """ImageNet-C's clipped zoom: the centre 1/factor of the image enlarged back to its size (bilinear)."""
    from torchvision.transforms.v2.functional import InterpolationMode, affine

    return affine(
        x, angle=0.0, translate=[0, 0], scale=factor, shear=[0.0, 0.0], interpolation=InterpolationMode.BILINEAR
    )


def zoom_blur(x: torch.Tensor, p: dict, gen: torch.Generator) -> torch.Tensor:
    factors = torch.arange(1, p["max_zoom"], p["step"]).tolist()
    out = x.clone()
    for factor in factors:
        out += _zoom(x, factor)
    return out / (len(factors) + 1)


def snow(x: torch.Tensor, p: dict, gen: torch.Generator) -> torch.Tensor:
    n, _, h, w = x.shape
    layer = p["mean"] + p["std"] * _normal((n, 1, h, w), gen, x.device)
    layer = _zoom(layer, p["zoom"])
    layer = torch.where(layer < p["threshold"], 0.0, layer).clamp(0, 1)
    angles = _uniform((n,), gen, x.device) * 90 - 135
    layer = (_motion(layer, p["radius"], p["sigma"], angles) * 255).round() / 255
    x = p["blend"] * x + (1 - p["blend"]) * torch.maximum(x, _gray(x) * 1.5 + 0.5)
    return x + layer + layer.flip(-1, -2)


def fog(x: torch.Tensor, p: dict, gen: torch.Generator) -> torch.Tensor:
    """ImageNet-C's plasma fractal through kornia's diamond-square, its roughness the inverse of
    ImageNet-C's wibble decay, one map per image, normalised to [0, 1] as ImageNet-C's."""
    from kornia.contrib import diamond_square

    n, _, h, w = x.shape

    def draw(shape: tuple[int, ...], device: torch.device | None = None, dtype: torch.dtype | None = None):
        return torch.rand(shape, generator=gen, device=x.device, dtype=dtype)

    plasma = diamond_square((n, 1, h, w), roughness=1 / p["decay"], random_fn=draw, normalize_range=(0.0, 1.0))
    peak = x.amax(dim=(1, 2, 3), keepdim=True)
    return (x + p["strength"] * plasma) * peak / (peak + p["strength"])


def _hsv(x: torch.Tensor, change: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    from kornia.color import hsv_to_rgb, rgb_to_hsv

    return hsv_to_rgb(change(rgb_to_hsv(x)))


def brightness(x: torch.Tensor, p: dict, gen: torch.Generator) -> torch.Tensor:
    """The HSV value channel raised by `shift`; a gray image's value is the image itself."""
    if x.shape[1] != 3:
        return x + p["shift"]
    return _hsv(x, lambda hsv: torch.cat([hsv[:, :2], (hsv[:, 2:] + p["shift"]).clamp(0, 1)], 1))


def saturate(x: torch.Tensor, p: dict, gen: torch.Generator) -> torch.Tensor:
    return _hsv(
        x, lambda hsv: torch.cat([hsv[:, :1], (hsv[:, 1:2] * p["factor"] + p["shift"]).clamp(0, 1), hsv[:, 2:]], 1)
    )


def contrast(x: torch.Tensor, p: dict, gen: torch.Generator) -> torch.Tensor:
    means = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - means) * p["factor"] + means


def elastic_transform(x: torch.Tensor, p: dict, gen: torch.Generator) -> torch.Tensor:
    """imagecorruptions' elastic: uniform noise in +-`max_shift` px per pixel, blurred by `sigma` px
    (truncated at 3 sigma), times `alpha`, is each pixel's displacement; bilinear, borders reflected."""
    n, _, h, w = x.shape
    field = (_uniform((n, 2, h, w), gen, x.device) * 2 - 1) * p["max_shift"]
    field = _blur(field, p["sigma"], truncate=3) * p["alpha"]
    return _resample(x, _pixels(h, w, x.device) + field.permute(0, 2, 3, 1))


def pixelate(x: torch.Tensor, p: dict, gen: torch.Generator) -> torch.Tensor:
    """PIL's BOX down-scaling (area averaging) to `keep` of the side, then back with nearest pixels."""
    h, w = x.shape[-2:]
    small = nnf.interpolate(x, size=(max(1, int(h * p["keep"])), max(1, int(w * p["keep"]))), mode="area")
    return nnf.interpolate(small, size=(h, w), mode="nearest")


def jpeg_compression(x: torch.Tensor, p: dict, gen: torch.Generator) -> torch.Tensor:
    """torchvision's JPEG encoder and decoder at `quality` (libjpeg on the CPU, as PIL's)."""
    from torchvision.transforms.v2.functional import jpeg

    pixels = (x.clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    return jpeg(pixels, int(p["quality"])).to(x.device).float() / 255


FUNCTIONS: dict[str, Callable[[torch.Tensor, dict, torch.Generator], torch.Tensor]] = {
    name: globals()[name] for name in TABLE
}


def generator_for(name: str, severity: int, chunk: int, device: torch.device) -> torch.Generator:
    """The seed of (corruption, severity, chunk of the test set): no run's seed or config enters."""
    seed = int.from_bytes(hashlib.sha256(f"{name}/{severity}/{chunk}".encode()).digest()[:8], "little") >> 1
    return torch.Generator(device=device).manual_seed(seed)


def corrupt(images: torch.Tensor, name: str, severity: int) -> torch.Tensor:
    """uint8 images (N, C, H, W) -> the same images corrupted, uint8, on their device."""
    side = min(images.shape[-2:])
    values = parameters(name, severity, side)
    out = torch.empty_like(images)
    for k, start in enumerate(range(0, len(images), CHUNK)):
        gen = generator_for(name, severity, k, images.device)
        chunk = images[start : start + CHUNK].float() / 255
        out[start : start + CHUNK] = (FUNCTIONS[name](chunk, values, gen).clamp(0, 1) * 255).round().to(torch.uint8)
    return out
