"""Bad input: one line on stderr naming the key, a non-zero exit, no run folder, before any training."""

import pytest
import torch

from expframe.callbacks import check_config
from expframe.cli import USER_ERRORS, one_line
from tests.conftest import make_cfg, run_cli

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
]
if not torch.cuda.is_available():
    CASES.append((["device=cuda"], ["device", "cuda", "not available"]))
    CASES.append((["cuda_graphs=true"], ["cuda_graphs", "device=cuda"]))
CASES.append((["device=cpu", "cuda_graphs=true"], ["cuda_graphs", "device=cuda"]))


def in_process_error(overrides: list[str]) -> str:
    """What the CLI prints, reached in this process: composition, then the pre-run check."""
    try:
        cfg = make_cfg(*overrides)
    except USER_ERRORS as e:
        return f"error: {one_line(e)}"
    with pytest.raises(SystemExit) as stop:
        check_config(cfg)
    return str(stop.value.code)


CONFIG_CASES = [c for c in CASES if c[0][0] != "-m"]


@pytest.mark.parametrize("overrides,words", CONFIG_CASES, ids=[" ".join(c[0]) for c in CONFIG_CASES])
def test_bad_config_is_refused_in_process(tmp_path, overrides, words):
    line = in_process_error([o.format(tmp=tmp_path) for o in overrides])
    assert line.startswith("error: ") and "\n" not in line
    for word in words:
        assert word in line, (word, line)


@pytest.mark.slow
@pytest.mark.parametrize("overrides,words", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_input_is_one_clear_line(tmp_path, overrides, words):
    run_dir = tmp_path / "run"
    out = run_cli("train.py", *(o.format(tmp=tmp_path) for o in overrides), f"hydra.run.dir={run_dir}")
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in out.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert not run_dir.exists(), "a rejected config must not create its run folder"


@pytest.mark.slow
def test_crash_inside_a_run_is_recorded_and_fails(tmp_path):
    out = run_cli("train.py", "+optimizer.bogus=1", "epochs=1", f"hydra.run.dir={tmp_path}")
    assert out.returncode != 0
    metrics = (tmp_path / "metrics.json").read_text()
    assert '"status": "failed"' in metrics and "bogus" in metrics


@pytest.mark.slow
def test_precision_a_device_cannot_autocast_to_is_refused(tmp_path):
    """torch only warns and computes in float32 there; expframe refuses instead of mislabelling."""
    variant = tmp_path / "conf" / "precision" / "fp64.yaml"
    variant.parent.mkdir(parents=True)
    variant.write_text("name: fp64\nautocast_dtype: float64\ngrad_scaler: false\n")
    run_dir = tmp_path / "run"
    out = run_cli(
        "train.py", "--config-dir", str(tmp_path / "conf"), "precision=fp64", "device=cpu", f"hydra.run.dir={run_dir}"
    )
    assert out.returncode != 0 and not run_dir.exists()
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: precision='fp64'") and "cannot autocast" in lines[0], lines


@pytest.mark.slow
def test_a_split_that_leaves_nothing_to_train_on_is_one_line(tmp_path):
    """Only the loaded data set knows its size: the job's folder exists, the run records why it failed."""
    out = run_cli("train.py", "dataset.val_fraction=0.9999", f"hydra.run.dir={tmp_path}")
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: dataset.val_fraction=0.9999: leaves 0 of 4000"), lines
    assert '"status": "failed"' in (tmp_path / "metrics.json").read_text()
