"""model.pt in every run folder and `expframe-eval`, which re-scores it to the recorded test accuracy."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from expframe.cli.rescore import rescore
from expframe.train.run import train
from tests.conftest import make_cfg, run_train_in_process


def hydra_like_run(cfg, run_dir: Path) -> dict:
    """A run trained in this process, its config saved where Hydra keeps it."""
    run = train(cfg, run_dir)
    (run_dir / ".hydra").mkdir()
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    return run.metrics


@pytest.mark.parametrize(
    "overrides",
    [
        ("dataset=digits", "optimizer=adam", "epochs=2"),
        ("dataset=digits", "model=cnn", "model.batchnorm=true", "model.dropout=0.3", "epochs=2", "optimizer=adam"),
        ("dataset=digits", "precision=bf16", "device=cpu", "init=kaiming", "epochs=2", "optimizer=adam"),
    ],
    ids=["mlp", "cnn-batchnorm-dropout", "bf16-kaiming"],
)
def test_rescoring_model_pt_gives_the_recorded_test_acc_exactly(tmp_path, overrides):
    metrics = hydra_like_run(make_cfg(*overrides), tmp_path)
    assert metrics["model_file"] == "model.pt" and metrics["test_acc"] > 0.3
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) and v.device.type == "cpu" for v in state.values())
    scored = rescore(tmp_path)
    assert scored["test_acc"] == metrics["test_acc"] == scored["recorded_test_acc"]


def test_trained_run_returns_the_model_it_saved(tmp_path):
    run = train(make_cfg("dataset=digits", "epochs=1"), tmp_path)
    saved = torch.load(tmp_path / "model.pt", weights_only=True)
    assert run.model.state_dict().keys() == saved.keys()
    assert all(torch.equal(run.model.state_dict()[k].cpu(), v) for k, v in saved.items())
    assert run.out_dir == tmp_path and run.cfg.dataset.name == "digits"


@pytest.mark.slow
def test_eval_command_on_a_cli_run_and_its_errors(tmp_path):
    out = run_train_in_process("dataset=digits", "epochs=2", "optimizer=adam", f"hydra.run.dir={tmp_path / 'run'}")
    assert out.returncode == 0, out.stderr[-2000:]
    recorded = json.loads((tmp_path / "run" / "metrics.json").read_text())["test_acc"]
    skipped = run_train_in_process(
        "dataset=digits", "epochs=1", "checkpoint.save_model=false", f"hydra.run.dir={tmp_path / 'bare'}"
    )
    assert skipped.returncode == 0 and not (tmp_path / "bare" / "model.pt").exists()
    script = str(Path(sys.executable).parent / "expframe-eval")
    ok = subprocess.run([script, str(tmp_path / "run"), "--check"], capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith(f"test_acc={recorded:.4f}") and "equal" in ok.stdout
    bare = subprocess.run([script, str(tmp_path / "bare")], capture_output=True, text=True, timeout=300)
    assert bare.returncode == 1 and bare.stderr.strip().splitlines() == [bare.stderr.strip()]
    assert "has no model.pt" in bare.stderr and "checkpoint.save_model=false" in bare.stderr
    assert "Traceback" not in bare.stderr
