"""The data report's time on an image folder with a warm decode cache, and each augmentation's training
step against `augment=none`, side by side in one process on one folder and one ResNet-18.

    python -m tests.benchmark_data --images 5000 --size 64 --steps 12 --repeats 3

Prints: `expframe-data` on the folder (cold: decoding into an empty cache; warm: the report from the
cache, in this process and as a whole new process), then per augmentation the median step time of the
real training step (`expframe.train.setup`: gather, augment, forward, loss, backward, update), its
ratio to `augment=none`, and the augmentation alone on the same kind of batch (its own cost, which
the step's run-to-run noise can hide). The variants take turns within each repeat, each repeat starting one variant
later, so a machine that slows down part-way slows every variant alike; the ratio is of medians.
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from tests.benchmark_images import write_digits
from tests.conftest import make_cfg

VARIANTS = ("none", "basic", "randaugment", "trivialaugment", "mixup", "cutmix")
# applied to the whole batch at once (one affine resampling, one mix); the policies call torchvision
# once per `augment.group` samples
BATCHED = ("basic", "mixup", "cutmix")
TARGET = 1.3


def data_report_seconds(root: Path, size: int, out: Path) -> tuple[float, float, float, float]:
    """Cold (decode into the cache), warm in this process, warm as a new `expframe-data` process, and
    the floor under a new process: the interpreter starting and importing torch."""
    from expframe.cli import data_report

    args = ["dataset=image_folder", f"dataset.root={root}", f"dataset.image_size={size}", "dataset.num_classes=10"]
    times = []
    for k in range(2):
        start = time.perf_counter()
        data_report.main([*args, "--out", str(out / f"in_process_{k}")])
        times.append(time.perf_counter() - start)
    script = Path(sys.executable).parent / "expframe-data"
    start = time.perf_counter()
    done = subprocess.run([str(script), *args, "--out", str(out / "process")], capture_output=True, text=True)
    whole = time.perf_counter() - start
    assert done.returncode == 0, done.stderr[-2000:]
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch"], check=True)
    floor = time.perf_counter() - start
    return times[0], times[1], whole, floor


def step_setups(root: Path, size: int, batch: int, out: Path) -> dict:
    from expframe.train.setup import setup

    runs = {}
    for variant in VARIANTS:
        cfg = make_cfg(
            "dataset=image_folder",
            f"dataset.root={root}",
            f"dataset.image_size={size}",
            "dataset.num_classes=10",
            "model=resnet",
            f"augment={variant}",
            f"batch_size={batch}",
            "energy.track=false",
            "device=cpu",
        )
        runs[variant] = setup(cfg, torch.device("cpu"), out / variant)
    return runs


def time_steps(run, steps: int, batch: int, generator: torch.Generator) -> list[float]:
    run.model.train()
    times = []
    for _ in range(steps):
        idx = run.train_idx[torch.randint(len(run.train_idx), (batch,), generator=generator)]
        start = time.perf_counter()
        run.step(idx, None)
        times.append(time.perf_counter() - start)
    return times


def time_augment(run, steps: int, batch: int, generator: torch.Generator) -> list[float]:
    """The augmentation alone on gathered batches: its own cost, free of the step's noise."""
    times = []
    for _ in range(steps):
        idx = run.train_idx[torch.randint(len(run.train_idx), (batch,), generator=generator)]
        x, y = run.data.train_x[idx], run.data.train_y[idx]
        start = time.perf_counter()
        if run.augment is not None:
            run.augment(x, y)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=12, help="timed steps per variant per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "digits"
        write_digits(root, args.images * 5 // 6, args.size)
        total = sum(1 for _ in root.rglob("*.png"))
        cold, warm, whole, floor = data_report_seconds(root, args.size, Path(tmp) / "reports")
        print(f"\nexpframe-data on {total:,} images of {args.size}x{args.size}:")
        print(f"  cold (decoding into the cache): {cold:.2f} s")
        print(f"  warm decode cache, in process: {warm:.2f} s (target < 5 s)")
        print(f"  warm decode cache, whole process (interpreter and imports included): {whole:.2f} s")
        print(f"  of which the floor, `python -c 'import torch'`: {floor:.2f} s; above it: {whole - floor:.2f} s")
        runs = step_setups(root, args.size, args.batch, Path(tmp) / "runs")
        generator = torch.Generator().manual_seed(0)
        for run in runs.values():  # a first step of each, untimed (allocations, kernel choices)
            time_steps(run, 2, args.batch, generator)
        samples: dict[str, list[float]] = {v: [] for v in VARIANTS}
        for repeat in range(args.repeats):  # each repeat starts one variant later: no variant always goes last
            turn = VARIANTS[repeat % len(VARIANTS) :] + VARIANTS[: repeat % len(VARIANTS)]
            for variant in turn:
                samples[variant] += time_steps(runs[variant], args.steps, args.batch, generator)
        alone = {v: statistics.median(time_augment(runs[v], 4 * args.steps, args.batch, generator)) for v in VARIANTS}
    base = statistics.median(samples["none"])
    threads = torch.get_num_threads()
    print(f"\nResNet-18 training step, batch {args.batch} of {args.size}x{args.size} images, CPU ({threads} threads),")
    print(f"{args.steps} x {args.repeats} steps per variant, taking turns:")
    print("| augment | median step ms | / none | the augmentation alone, ms per batch | batched |")
    print("|---|---:|---:|---:|---|")
    for variant in VARIANTS:
        median = statistics.median(samples[variant])
        ratio = median / base
        verdict = "per group" if variant not in BATCHED else f"yes, {'within' if ratio <= TARGET else 'OVER'} {TARGET}x"
        verdict = "the baseline" if variant == "none" else verdict
        print(f"| {variant} | {1000 * median:.1f} | {ratio:.3f} | {1000 * alone[variant]:.2f} | {verdict} |")


if __name__ == "__main__":
    main()
