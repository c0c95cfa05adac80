"""Bad input: one line on stderr naming the key, a non-zero exit, no run folder, before any training."""

import json

import pytest
import torch

from expframe.record import catalogue as figures
from tests.conftest import run_cli, run_cli_in_process, run_train_in_process

CASES = [
    (["optimizer=adamx"], ["optimizer", "adamx", "sgd_momentum"]),
    (["model.dpth=3"], ["model.dpth", "depth"]),
    (["model.depth=abc"], ["model.depth", "abc", "integer"]),
    (["optimizer.lr=0"], ["optimizer.lr", "0", "> 0"]),
    (["optimizer.lr=-0.1"], ["optimizer.lr", "-0.1", "> 0"]),
    (["model.dropout=1.0"], ["model.dropout", "1.0", "[0, 1)"]),
    (["model.dropout=-0.1"], ["model.dropout", "[0, 1)"]),
    (["model.depth=-1"], ["model.depth", "-1", ">= 0"]),
    (["model.width=0"], ["model.width", "0", ">= 1"]),
    (["batch_size=0"], ["batch_size", "0", ">= 1"]),
    (["epochs=0"], ["epochs", "0", ">= 1"]),
    (["dataset.val_fraction=0"], ["dataset.val_fraction", "(0, 1)"]),
    (["dataset.val_fraction=1.5"], ["dataset.val_fraction", "1.5", "(0, 1)"]),
    (["model.batchnorm=maybe"], ["model.batchnorm", "maybe", "true or false"]),
    (["objective=accuracy"], ["objective", "accuracy", "val_acc"]),
    (["dataset=mnist", "dataset.root={tmp}/no_mnist"], ["dataset.root", "no_mnist", "download"]),
    (["-m", "optimizer=sgd,adam", "--cfg", "job"], ["--multirun", "--cfg"]),
    (["batch_size=1", "model.batchnorm=true"], ["batch_size", "1", ">= 2", "batchnorm"]),
    (["+model.foo=1"], ["model.foo=1", "not a parameter", "expframe.models.MLP", "depth, width"]),
    (["scheduler=step", "scheduler.step_size=0"], ["scheduler.step_size=0", ">= 1"]),
    (["scheduler=cosine", "scheduler.T_max=0"], ["scheduler.T_max=0", ">= 1"]),
    (["scheduler=exponential", "scheduler.gamma=-1"], ["scheduler.gamma=-1", "(0, 1]"]),
    (["scheduler=step", "+scheduler.last_epoch=abc"], ["scheduler.last_epoch='abc'", "a number"]),
    (["device.threads=-3"], ["device.threads=-3", ">= 1"]),
    (["device.threads=abc"], ["device.threads='abc'", "integer"]),
    (["device.threads=0"], ["device.threads=0", ">= 1"]),
    (["optimizer=sgd_momentum", "optimizer.momentum=-1"], ["optimizer.momentum=-1", "[0, 1)"]),
    (["optimizer=adam", "+optimizer.betas=[0.9,1.5]"], ["optimizer.betas", "Invalid beta"]),
    (["+optimizer.nesterov=true"], ["optimizer.nesterov=true", "Nesterov momentum requires a momentum"]),
    (["+optimizer.dampening=abc"], ["optimizer.dampening='abc'", "a number"]),
    (["optimizer=adamw", "optimizer.weight_decay=-0.1"], ["optimizer.weight_decay=-0.1", ">= 0"]),
    (["optimizer.lr=inf"], ["optimizer.lr=inf", "finite"]),
    (["optimizer.lr=nan"], ["optimizer.lr=nan", "finite"]),
    (["seed=18446744073709551616"], ["seed=18446744073709551616", "2**63 - 1"]),
    (["seed=-1"], ["seed=-1", "[0, 2**63 - 1]"]),
    (["epochs=true"], ["epochs=true", "integer"]),
    (["batch_size=abc"], ["batch_size='abc'", "integer"]),
    (["model.width=1.5"], ["model.width=1.5", "integer"]),
    (["compile=maybe"], ["compile='maybe'", "true or false"]),
    (["checkpoint.save_model=yes"], ["checkpoint.save_model='yes'", "true or false"]),
    (["logging.tensorboard=maybe"], ["logging.tensorboard='maybe'", "true or false"]),
    (["logging.histogram_every=-1"], ["logging.histogram_every=-1", ">= 0"]),
    (["+activation.inplace=maybe"], ["activation.inplace='maybe'", "true or false"]),
    (["init=kaiming", "init.weight.mode=fan_xx"], ["init.weight.mode='fan_xx'", "fan_in"]),
    (["init=kaiming", "+init.weight.nonlinearity=foo"], ["init.weight.nonlinearity='foo'", "Unsupported nonlinearity"]),
    (["+loss.weight=[1,2]"], ["loss.weight=[1, 2]", "10 non-negative numbers"]),
    (["loss.label_smoothing=1.5"], ["loss.label_smoothing=1.5", "[0, 1)"]),
    (["+loss.reduce_sum=true"], ["loss.reduce_sum=true", "not a parameter", "CrossEntropyLoss"]),
    (["model=cnn", "model.channels=[0]"], ["model=", "CNN", "cannot"]),
    (["model=cnn", "dataset=synthetic", "dataset.source.shape=[784]"], ["model=", "CNN", "(784,)"]),
    (["model=cnn", "dataset=synthetic", "dataset.source.shape=[1,2,2]"], ["model=", "(1, 2, 2)", "too small"]),
    (["dataset.source.test_size=0"], ["dataset.source.test_size=0", ">= 1"]),
    (["+dataset.source.repeat=0"], ["dataset.source.repeat=0", ">= 1"]),
    (["dataset.num_classes=1"], ["dataset.num_classes=1", ">= 2"]),
    (["+trial=-1"], ["trial=-1", ">= 0"]),
    (["objective=[val_acc,bogus]"], ["objective='bogus'", "val_acc"]),
    (["precision=fp8"], ["precision", "fp8", "bf16"]),
    (["+experiment=axis3_optimizers"], ["this is a sweep", "python train.py -m +experiment=axis3_optimizers"]),
    (["hparams_search=optuna_tpe"], ["this is a sweep", "-m hparams_search=optuna_tpe"]),
    (["hydra.run.dir=/proc/nope"], ["hydra.run.dir='/proc/nope'", "/proc is not writable"]),
    (["hydra.run.dir={tmp}/a_file/run"], ["hydra.run.dir=", "a_file is a file"]),
    (["-m", "optimizer.lr=0.1,inf"], ["optimizer.lr=inf", "finite"]),
    (["-m", "optimizer=sgd,adamx"], ["optimizer=", "adamx", "sgd_momentum"]),
    (["-m", "model.depth=1,-2"], ["model.depth=-2", ">= 0"]),
    (["-m", "hydra.sweep.dir=/proc/nope", "seed=0,1"], ["hydra.sweep.dir='/proc/nope'", "not writable"]),
]
if not torch.cuda.is_available():
    CASES.append((["device=cuda"], ["device", "cuda", "not available"]))
    CASES.append((["cuda_graphs=true"], ["cuda_graphs", "device=cuda"]))
CASES.append((["device=cpu", "cuda_graphs=true"], ["cuda_graphs", "device=cuda"]))


def test_the_table_is_long_enough():
    assert len(CASES) >= 60


def command(tmp_path, overrides: list[str]) -> tuple[list[str], list]:
    (tmp_path / "a_file").write_text("")
    folders = [tmp_path / "run", tmp_path / "sweep"]
    where = [f"hydra.run.dir={folders[0]}", f"hydra.sweep.dir={folders[1]}"]
    return [*where, *(o.format(tmp=tmp_path) for o in overrides)], folders


def assert_one_clear_line(status: int, stderr: str, words: list[str], folders: list) -> None:
    assert status == 1
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ") and "Traceback" not in stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert not any(f.exists() for f in folders), "a rejected config must not create its folder"


@pytest.mark.parametrize("overrides,words", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_input_is_one_clear_line(tmp_path, overrides, words):
    args, folders = command(tmp_path, overrides)
    assert_one_clear_line(*run_cli_in_process(*args), words, folders)


# the same entry point as a real process: exit status, stderr and no traceback from the interpreter
REAL_PROCESS = [c for c in CASES if c[0] in (["optimizer=adamx"], ["+model.foo=1"], ["-m", "optimizer.lr=0.1,inf"])]


@pytest.mark.slow
@pytest.mark.parametrize("overrides,words", REAL_PROCESS, ids=[" ".join(c[0]) for c in REAL_PROCESS])
def test_bad_input_in_a_real_process(tmp_path, overrides, words):
    args, folders = command(tmp_path, overrides)
    out = run_cli("train.py", *args)
    assert_one_clear_line(out.returncode, out.stderr, words, folders)


@pytest.mark.slow
def test_data_that_break_the_declared_shape_are_recorded_and_fail(tmp_path):
    """Only the loaded data can refute dataset.input_shape: the job's folder exists and says why."""
    out = run_train_in_process("dataset=digits", "dataset.input_shape=[1,28,28]", f"hydra.run.dir={tmp_path}")
    assert out.returncode == 1 and out.stderr.strip().splitlines() == [out.stderr.strip()]
    assert "dataset.input_shape=[1, 28, 28]" in out.stderr and "[1, 8, 8]" in out.stderr
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "failed" and "[1, 8, 8]" in metrics["error"]
    assert set(figures.names(figures.in_summary())) <= set(metrics), "a failed run has the full schema"


@pytest.mark.slow
def test_precision_a_device_cannot_autocast_to_is_refused(tmp_path):
    """torch only warns and computes in float32 there; expframe refuses instead of mislabelling."""
    variant = tmp_path / "conf" / "precision" / "fp64.yaml"
    variant.parent.mkdir(parents=True)
    variant.write_text("name: fp64\nautocast_dtype: float64\ngrad_scaler: false\n")
    run_dir = tmp_path / "run"
    out = run_train_in_process(
        "--config-dir", str(tmp_path / "conf"), "precision=fp64", "device=cpu", f"hydra.run.dir={run_dir}"
    )
    assert out.returncode != 0 and not run_dir.exists()
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: precision='fp64'") and "cannot autocast" in lines[0], lines


@pytest.mark.slow
def test_a_split_that_leaves_nothing_to_train_on_is_one_line(tmp_path):
    """Only the loaded data set knows its size: the job's folder exists, the run records why it failed."""
    out = run_train_in_process("dataset.val_fraction=0.9999", f"hydra.run.dir={tmp_path}")
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: dataset.val_fraction=0.9999: leaves 0 of 4000"), lines
    assert '"status": "failed"' in (tmp_path / "metrics.json").read_text()
