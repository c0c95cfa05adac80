"""The shift evaluation against the same corruptions applied the way the practicals' code applies a
transform: one PIL image at a time in a Dataset, batched by a DataLoader into the same model, side by
side in one process on the same test set; then its share of a default run's wall clock.

    python -m tests.benchmark_shift

Prints per contender the seconds to score the model on every (corruption, severity) both can
apply (the per-image column uses torchvision's v2 transforms and PIL where torchvision has the
corruption, numpy lines where it does not), their ratio (target: at least 10x), the batched path on
all of `shift=standard`, and for `python train.py shift=standard`: the shift evaluation's seconds in
the first job of a process (it makes the corrupted sets) and in a later job (it only scores), against
the run's training steps and its whole wall clock.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from PIL import Image

from expframe.data.corruption_table import SEVERITIES, parameters
from expframe.data.device_data import load
from expframe.measure import shift
from tests.conftest import ROOT, make_cfg

# the corruptions a student applies per image with torchvision's v2 transforms, PIL, or imagecorruptions'
# own numpy/scipy lines (every one whose reference needs no OpenCV, ImageMagick or scikit-image)
PER_IMAGE = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "gaussian_blur",
    "zoom_blur",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
)


def per_image_transform(name: str, severity: int, side: int, rng: np.random.Generator):
    """PIL image -> corrupted float tensor in [0, 1] (1, H, W), as a practical's transform would."""
    from torchvision.transforms import v2

    p = parameters(name, severity, side)
    to_tensor = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
    if name == "gaussian_noise":
        return v2.Compose([to_tensor, v2.GaussianNoise(sigma=p["std"], clip=True)])
    if name == "gaussian_blur":
        radius = max(1, min(int(4 * p["sigma"] + 0.5), side - 1))
        return v2.Compose([v2.GaussianBlur(2 * radius + 1, p["sigma"]), to_tensor])
    if name == "jpeg_compression":
        return v2.Compose([v2.JPEG(int(p["quality"])), to_tensor])
    if name == "contrast":
        return v2.Compose([to_tensor, v2.Lambda(lambda x: v2.functional.adjust_contrast(x, p["factor"]))])

    def numpy_line(image: Image.Image) -> torch.Tensor:
        x = np.asarray(image, dtype=np.float32) / 255
        if name == "shot_noise":
            x = rng.poisson(x * p["photons"]) / p["photons"]
        elif name == "impulse_noise":
            hit = rng.random(x.shape) < p["amount"]
            x = np.where(hit, (rng.random(x.shape) < 0.5).astype(np.float32), x)
        elif name == "zoom_blur":  # imagecorruptions' clipped_zoom, scipy's zoom per factor
            from scipy.ndimage import zoom

            out = x.copy()
            for factor in np.arange(1, p["max_zoom"], p["step"]):
                crop = int(np.ceil(side / factor))
                top = (side - crop) // 2
                zoomed = zoom(x[top : top + crop, top : top + crop], factor, order=1)
                trim = (zoomed.shape[0] - side) // 2
                out += zoomed[trim : trim + side, trim : trim + side]
            x = out / (len(np.arange(1, p["max_zoom"], p["step"])) + 1)
        elif name == "elastic_transform":  # imagecorruptions' lines, scipy for scikit-image's gaussian
            from scipy.ndimage import gaussian_filter, map_coordinates

            dx, dy = (
                gaussian_filter(rng.uniform(-p["max_shift"], p["max_shift"], x.shape), p["sigma"], truncate=3)
                * p["alpha"]
                for _ in range(2)
            )
            rows, cols = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
            x = map_coordinates(x, (rows + dy, cols + dx), order=1, mode="reflect")
        elif name == "pixelate":
            small = image.resize((int(side * p["keep"]),) * 2, Image.BOX)
            x = np.asarray(small.resize((side, side), Image.BOX), dtype=np.float32) / 255
        return torch.from_numpy(np.clip(x, 0, 1).astype(np.float32))[None]

    return numpy_line


class CorruptedDigits(torch.utils.data.Dataset):
    def __init__(self, pixels: torch.Tensor, labels: torch.Tensor, transform) -> None:
        self.images = [Image.fromarray(p[0].numpy()) for p in pixels]
        self.labels, self.transform = labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.transform(self.images[i]), self.labels[i]


def per_image(model, data, names: tuple[str, ...], mean: float, std: float) -> float:
    """Seconds to score every (corruption, severity) the practical's way: DataLoader, batch 256."""
    pixels, labels = data.test_pixels().cpu(), data.test_y.cpu()
    side = pixels.shape[-1]
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    with torch.inference_mode():
        for name in names:
            for severity in SEVERITIES:
                dataset = CorruptedDigits(pixels, labels, per_image_transform(name, severity, side, rng))
                for x, y in torch.utils.data.DataLoader(dataset, batch_size=256):
                    model((x - mean) / std).argmax(1).eq(y).sum()
    return time.perf_counter() - start


def batched(model, data, names: tuple[str, ...]) -> float:
    """Seconds for expframe's shift evaluation of the same pairs, from an empty cache."""
    shift._SETS.clear()
    settings = OmegaConf.create({"corruptions": list(names), "severities": list(SEVERITIES), "cache_mb": 1024})
    start = time.perf_counter()
    shift.score(model, data, settings, torch.autocast("cpu", enabled=False))
    return time.perf_counter() - start


def default_run_share() -> dict[str, float]:
    """`python train.py -m shift=standard seed=0,1`: the first job makes the corrupted sets, the
    second only scores them."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        command = [sys.executable, "train.py", "-m", "shift=standard", "seed=0,1", f"hydra.sweep.dir={tmp}"]
        subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
        wall = time.perf_counter() - start
        jobs = sorted(Path(tmp).glob("[0-9]*/metrics.json"), key=lambda p: int(p.parent.name.split("_")[0]))
        first, later = (json.loads(p.read_text()) for p in jobs)
    return {
        "first_shift_s": first["time_breakdown"]["shift_eval_s"],
        "later_shift_s": later["time_breakdown"]["shift_eval_s"],
        "train_s": first["time_breakdown"]["training_steps_s"],
        "first_job_s": sum(v for v in first["time_breakdown"].values() if v),
        "sweep_wall_s": wall,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmark_shift", description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=1000, help="test images (the default run's 1,000)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-run", action="store_true", help="leave out the default run's share")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    cfg = make_cfg(f"dataset.source.test_size={args.images}")
    data = load(cfg.dataset, torch.device("cpu"))
    model = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(784, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10)
    )
    mean, std = float(data.pixel_mean.flatten()[0]), float(data.pixel_std.flatten()[0])
    ours, theirs = [], []
    for _ in range(args.repeats):  # alternated, so both see the same machine
        theirs.append(per_image(model, data, PER_IMAGE, mean, std))
        ours.append(batched(model, data, PER_IMAGE))
    ratio = statistics.median(t / o for t, o in zip(theirs, ours, strict=True))
    pairs = len(PER_IMAGE) * len(SEVERITIES)
    print(f"shift evaluation, {len(data.test_y)} test digits, {pairs} (corruption, severity) pairs, ", end="")
    print(f"medians of {args.repeats}")
    print(f"per image (PIL/torchvision transforms, DataLoader) {statistics.median(theirs):.2f} s")
    print(f"expframe (batched on the device, from an empty cache) {statistics.median(ours):.2f} s")
    print(f"ratio {ratio:.1f}x faster (target 10x)")
    standard = OmegaConf.load(ROOT / "conf" / "shift" / "standard.yaml").corruptions
    print(f"expframe, all of shift=standard ({len(standard) * 5} pairs): {batched(model, data, tuple(standard)):.2f} s")
    if args.no_run:
        return
    run = default_run_share()
    share = run["first_shift_s"] / run["first_job_s"]
    print(
        f"python train.py -m shift=standard seed=0,1: training steps {run['train_s']:.2f} s a job; shift evaluation "
        f"{run['first_shift_s']:.2f} s in the first job (makes the sets: {share:.0%} "
        f"of its {run['first_job_s']:.2f} s), {run['later_shift_s']:.2f} s in the second (scores only: "
        f"{run['later_shift_s'] / run['train_s']:.2f}x its training steps)"
    )


if __name__ == "__main__":
    main()
