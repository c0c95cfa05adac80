"""The parameters of every corruption at severities 1-5: ImageNet-C's, as its authors published them.

From Hendrycks & Dietterich's code (github.com/hendrycks/robustness,
`ImageNet-C/imagenet_c/imagenet_c/corruptions.py`), written for 224 px images; elastic is the
`imagecorruptions` package's (ImageNet-C's is not ordered by severity). Lengths in pixels
(`pixel_fields`: blur radii and sigmas, shuffle distances, motion lengths) are used as published on
images up to 224 px, as MNIST-C (Mu & Gilmer 2019) applies them to 28x28 digits: scaled down by
28/224 they would fall under a pixel and blur nothing. On larger images they grow with the shorter
side over 224, so a 448 px image is blurred as its 224 px copy. Lengths given as a share of the side
(`side_fields`, elastic's) follow the side at every size; unit-free values (noise strengths, zoom
factors, brightness and contrast, JPEG quality, the share pixelate keeps) are used as published.
docs/robustness.md prints the table.
"""

from dataclasses import dataclass

from expframe.record.catalogue import CORRUPTION_FAMILIES

TABLE_SIDE = 224
SEVERITIES = (1, 2, 3, 4, 5)


@dataclass(frozen=True)
class Corruption:
    name: str
    # what each value of a severity's tuple is
    fields: tuple[str, ...]
    # severities 1-5, for 224 px images
    values: tuple[tuple[float, ...], ...]
    # lengths in pixels, as ImageNet-C applies them to 224 px images and MNIST-C to 28 px ones
    pixel_fields: tuple[str, ...] = ()
    # lengths that are a share of the image's side (given for 224 px)
    side_fields: tuple[str, ...] = ()
    # the channel counts it applies to (None: any)
    channels: tuple[int, ...] | None = None


def _one(values: list[float]) -> tuple[tuple[float, ...], ...]:
    return tuple((v,) for v in values)


TABLE: dict[str, Corruption] = {
    c.name: c
    for c in (
        Corruption("gaussian_noise", ("std",), _one([0.08, 0.12, 0.18, 0.26, 0.38])),
        Corruption("shot_noise", ("photons",), _one([60, 25, 12, 5, 3])),
        Corruption("impulse_noise", ("amount",), _one([0.03, 0.06, 0.09, 0.17, 0.27])),
        Corruption("speckle_noise", ("std",), _one([0.15, 0.2, 0.35, 0.45, 0.6])),
        Corruption(
            "defocus_blur",
            ("radius", "alias_sigma"),
            ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)),
            ("radius", "alias_sigma"),
        ),
        Corruption(
            "glass_blur",
            ("sigma", "max_delta", "iterations"),
            ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)),
            ("sigma", "max_delta"),
        ),
        Corruption(
            "motion_blur", ("radius", "sigma"), ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)), ("radius", "sigma")
        ),
        Corruption(
            "zoom_blur",
            ("max_zoom", "step"),
            ((1.11, 0.01), (1.16, 0.01), (1.21, 0.02), (1.26, 0.02), (1.31, 0.03)),
        ),
        Corruption("gaussian_blur", ("sigma",), _one([1, 2, 3, 4, 6]), ("sigma",)),
        Corruption(
            "snow",
            ("mean", "std", "zoom", "threshold", "radius", "sigma", "blend"),
            (
                (0.1, 0.3, 3, 0.5, 10, 4, 0.8),
                (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
                (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
                (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
                (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55),
            ),
            ("radius", "sigma"),
        ),
        Corruption("fog", ("strength", "decay"), ((1.5, 2), (2, 2), (2.5, 1.7), (2.5, 1.5), (3, 1.4))),
        Corruption("brightness", ("shift",), _one([0.1, 0.2, 0.3, 0.4, 0.5])),
        Corruption("contrast", ("factor",), _one([0.4, 0.3, 0.2, 0.1, 0.05])),
        Corruption("saturate", ("factor", "shift"), ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2)), channels=(3,)),
        # imagecorruptions' elastic (Michaelis et al. 2019), ordered by severity where ImageNet-C's is not
        # (its severity 2 moves the affine points by 20% of the side, its severity 3 by 2%)
        Corruption(
            "elastic_transform",
            ("alpha", "sigma", "max_shift"),
            tuple((250 * a, 0.01 * 224, 0.005 * 224) for a in (0.05, 0.065, 0.085, 0.1, 0.12)),
            side_fields=("sigma", "max_shift"),
        ),
        Corruption("pixelate", ("keep",), _one([0.6, 0.5, 0.4, 0.3, 0.25])),
        Corruption("jpeg_compression", ("quality",), _one([25, 18, 15, 10, 7]), channels=(1, 3)),
    )
}


def scales(side: int) -> tuple[float, float]:
    """(pixel lengths, shares of the side) multipliers for images of this shorter side."""
    return max(1.0, side / TABLE_SIDE), side / TABLE_SIDE


def parameters(name: str, severity: int, side: int) -> dict[str, float]:
    """One severity's values for images of this shorter side."""
    corruption = TABLE[name]
    pixels, share = scales(side)
    row = corruption.values[severity - 1]
    scale = {**dict.fromkeys(corruption.pixel_fields, pixels), **dict.fromkeys(corruption.side_fields, share)}
    return {f: v * scale.get(f, 1.0) for f, v in zip(corruption.fields, row, strict=True)}


def family(name: str) -> str:
    return next(f for f, names in CORRUPTION_FAMILIES.items() if name in names)
