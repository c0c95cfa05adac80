"""Real runs on real data: accuracy, divergence, reproducibility, the practical's lessons, precisions."""

import csv
import json

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from expframe.record import catalogue as figures
from tests.conftest import make_cfg, needs_cuda, run_cli, trained


def history(path):
    return list(csv.DictReader((path / "history.csv").open()))


def test_mnist_5k_two_epochs_learns(tmp_path):
    m = trained(make_cfg("epochs=2", "optimizer=sgd_momentum"), tmp_path)
    assert m["status"] == "ok" and m["epochs_run"] == 2
    assert m["test_acc"] > 0.85
    saved = json.loads((tmp_path / "metrics.json").read_text())
    bookkeeping = ("status", "error", "peak_rss_scope", "init_hash", "seed", "device", "precision", "env", "model_file")
    for key in (*figures.names(figures.in_summary()), *bookkeeping, "torch_threads", "threads_from", "swept"):
        assert key in saved, key
    assert m["peak_cuda_mem_bytes"] is None and m["peak_rss_bytes"] > 50 * 2**20
    assert m["epoch_time_s"] > 0 and m["samples_per_s"] > 1000 and m["n_params"] == 101770
    rows = history(tmp_path)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert list(rows[0]) == ["epoch", *figures.names(figures.per_epoch())]
    assert float(rows[0]["peak_rss_mb"]) > 50 and rows[0]["peak_cuda_mb"] == ""
    assert float(rows[1]["train_loss"]) < float(rows[0]["train_loss"])


def test_cli_default_run_writes_its_files(tmp_path):
    out = run_cli("train.py", "epochs=2", f"hydra.run.dir={tmp_path}")
    assert out.returncode == 0, out.stderr
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["val_acc"] > 0.5 and metrics["env"]["torch"] == torch.__version__
    assert metrics["swept"] == {"epochs": 2}
    assert len(history(tmp_path)) == 2
    assert (tmp_path / ".hydra" / "config.yaml").exists() and (tmp_path / "train.log").exists()
    assert "ok: val_acc=" in out.stderr + out.stdout
    assert "UserWarning" not in out.stderr


def test_digits_and_cnn(tmp_path):
    m = trained(make_cfg("dataset=digits", "seed=3", "epochs=3", "optimizer=adam"), tmp_path / "mlp")
    assert m["test_acc"] > 0.8 and m["seed"] == 3
    m = trained(
        make_cfg("dataset=digits", "model=cnn", "epochs=2", "optimizer=adam", "model.batchnorm=true"), tmp_path / "cnn"
    )
    assert m["status"] == "ok" and m["test_acc"] > 0.3


def test_torchvision_mnist_from_idx_files(tmp_path, tiny_mnist_root):
    cfg = make_cfg("dataset=mnist", f"dataset.root={tiny_mnist_root}", "dataset.download=false", "epochs=3")
    assert trained(cfg, tmp_path)["test_acc"] > 0.5


def test_divergence_is_recorded(tmp_path):
    m = trained(make_cfg("optimizer.lr=1e10", "epochs=3"), tmp_path)
    assert m["status"] == "diverged" and m["test_acc"] is None and m["model_file"] is None
    assert m["epochs_run"] < 3 and json.loads((tmp_path / "metrics.json").read_text())["status"] == "diverged"
    assert not (tmp_path / "model.pt").exists()


@pytest.mark.parametrize("seed", [0, 7])
def test_same_seed_same_history(tmp_path, seed):
    overrides = (f"seed={seed}", "epochs=2", "model.dropout=0.2")
    trained(make_cfg(*overrides), tmp_path / "a")
    trained(make_cfg(*overrides), tmp_path / "b")
    trained(make_cfg(f"seed={seed + 1}", *overrides[1:]), tmp_path / "c")
    a, b, c = (history(tmp_path / x) for x in "abc")
    measured = {f.name for f in figures.per_epoch() if not f.reproducible}
    assert {"train_loss", "val_acc", "lr"}.isdisjoint(measured) and "epoch_time_s" in measured
    assert [{k: v for k, v in r.items() if k not in measured} for r in a] == [
        {k: v for k, v in r.items() if k not in measured} for r in b
    ]
    assert a[0]["train_loss"] != c[0]["train_loss"], "a different seed must give different numbers"


def test_optimizers_start_from_the_same_weights(tmp_path):
    sgd = trained(make_cfg("optimizer=sgd", "epochs=1", "seed=5"), tmp_path / "sgd")
    adam = trained(make_cfg("optimizer=adam", "epochs=1", "seed=5"), tmp_path / "adam")
    other = trained(make_cfg("optimizer=sgd", "epochs=1", "seed=6"), tmp_path / "other")
    assert sgd["init_hash"] == adam["init_hash"] != other["init_hash"]


def test_zero_init_stays_near_chance(tmp_path):
    m = trained(make_cfg("init=zeros", "model.depth=2", "epochs=2", "optimizer=sgd_momentum"), tmp_path)
    assert m["test_acc"] < 0.2
    kaiming = trained(make_cfg("init=kaiming", "model.depth=2", "epochs=2", "optimizer=sgd_momentum"), tmp_path / "k")
    assert kaiming["test_acc"] > 0.8


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_reduced_precision_runs_on_cpu(tmp_path, precision):
    m = trained(make_cfg(f"precision={precision}", "device=cpu", "epochs=2", "optimizer=adam"), tmp_path)
    assert m["status"] == "ok" and m["precision"] == precision and m["test_acc"] > 0.8


def test_scheduler_changes_lr(tmp_path):
    trained(make_cfg("scheduler=cosine", "epochs=3"), tmp_path)
    lrs = [float(r["lr"]) for r in history(tmp_path)]
    assert lrs[0] == 0.01 and lrs[0] > lrs[1] > lrs[2]


def test_tensorboard_scalars_match_metrics(tmp_path):
    m = trained(
        make_cfg("logging.tensorboard=true", "logging.histogram_every=1", "logging.graph=true", "epochs=2"), tmp_path
    )
    events = EventAccumulator(str(tmp_path), size_guidance={"histograms": 0, "scalars": 0}).Reload()
    tags = events.Tags()
    for tag in (
        "loss/train",
        "loss/val",
        "acc/train",
        "acc/val",
        "time/epoch_s",
        "time/epoch_wall_s",
        "throughput/samples_per_s",
        "memory/process_rss_peak_mb",
        "lr",
        "whole_run/test_acc",
    ):
        assert tag in tags["scalars"], tag
    groups = sorted({tag.split("/")[0] for tag in tags["scalars"]})
    assert groups[-1] == "whole_run" and "acc/test" not in tags["scalars"], "curves open first, no repeats"
    val = events.Scalars("acc/val")
    assert [e.step for e in val] == [1, 2] and val[-1].value == pytest.approx(m["val_acc"])
    assert "grads/hidden1.weight" in tags["histograms"] and "weights/output.bias" in tags["histograms"]
    from tensorboard.plugins.custom_scalar import layout_pb2
    from tensorboard.util import tensor_util

    stored = tensor_util.make_ndarray(events.Tensors("custom_scalars__config__")[0].tensor_proto).item()
    charts = layout_pb2.Layout.FromString(stored).category[0].chart  # train vs validation on one chart
    assert [list(c.multiline.tag) for c in charts] == [["loss/train", "loss/val"], ["acc/train", "acc/val"]]
    assert tags["graph"]


@needs_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_cuda_run_measures_gpu_memory(tmp_path, precision):
    m = trained(make_cfg("device=cuda", f"precision={precision}", "epochs=2"), tmp_path)
    assert m["device"].startswith("cuda") and m["peak_cuda_mem_bytes"] > 0
    assert m["peak_cuda_reserved_bytes"] >= m["peak_cuda_mem_bytes"]
