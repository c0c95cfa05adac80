"""last.ckpt and resume: exact continuation after kill -9, and files that must never be trusted."""

import csv
import pickle
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.conftest import ROOT, run_cli_in_process, run_train_in_process

COMMON = ["epochs=6", "optimizer=adam", "model.dropout=0.3", "scheduler=step", "logging.tensorboard=false"]


def learned(path) -> list[dict]:
    keys = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr")
    return [{k: r[k] for k in keys} for r in csv.DictReader((path / "history.csv").open())]


def checkpoint_epoch(path) -> int:
    try:
        return torch.load(path / "last.ckpt", weights_only=True)["epoch"]
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError):
        return 0


@pytest.mark.slow
def test_a_run_killed_after_its_third_checkpoint_resumes_exactly(tmp_path):
    """Dropout, a scheduler and Adam: every random stream and every state must come back."""
    big = "+dataset.source.repeat=4"  # long enough epochs to be killed in the middle of the run
    full = run_train_in_process(*COMMON, big, f"hydra.run.dir={tmp_path / 'full'}")
    assert full.returncode == 0, full.stderr[-2000:]
    part = tmp_path / "part"
    proc = subprocess.Popen(
        [sys.executable, "train.py", *COMMON, big, "checkpoint.every=1", f"hydra.run.dir={part}"], cwd=ROOT
    )
    deadline = time.time() + 300
    while checkpoint_epoch(part) < 3 and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 3 <= checkpoint_epoch(part) < 6, "killed in the middle of the run"
    resumed = run_train_in_process(*COMMON, big, "checkpoint.every=1", f"resume={part}")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert learned(part) == learned(tmp_path / "full")
    a, b = (torch.load(p / "model.pt", weights_only=True) for p in (tmp_path / "full", part))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def checkpointed(tmp_path_factory):
    path = tmp_path_factory.mktemp("checkpointed")
    out = run_train_in_process(*COMMON, "epochs=2", "dataset=digits", "checkpoint.every=1", f"hydra.run.dir={path}")
    assert out.returncode == 0, out.stderr[-2000:]
    return path


def one_line(status: int, stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert status == 1 and len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def test_resume_with_other_values_lists_the_keys(checkpointed):
    line = one_line(*run_cli_in_process(*COMMON, "dataset=digits", "optimizer=sgd", f"resume={checkpointed}"))
    assert line.startswith("error: resume=") and "optimizer._target_" in line
    line = one_line(
        *run_cli_in_process(*COMMON, "epochs=1", "dataset=digits", "checkpoint.every=1", f"resume={checkpointed}")
    )
    assert "epochs=1: must be >= the 2 epochs" in line


class Payload:
    """Unpickling this would create a file: the proof that code ran."""

    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_crafted_checkpoint_is_refused_and_its_code_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "run").mkdir()
    torch.save({"format": 1, "epoch": 1, "model": Payload(marker)}, tmp_path / "run" / "last.ckpt")
    line = one_line(*run_cli_in_process(*COMMON, f"resume={tmp_path / 'run'}"))
    assert "last.ckpt cannot be read safely" in line and not marker.exists()


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", None], ids=["empty", "foreign", "truncated"])
def test_a_truncated_or_foreign_checkpoint_is_one_line(tmp_path, checkpointed, content):
    (tmp_path / "run").mkdir()
    data = (checkpointed / "last.ckpt").read_bytes()[:200] if content is None else content
    (tmp_path / "run" / "last.ckpt").write_bytes(data)
    line = one_line(*run_cli_in_process(*COMMON, f"resume={tmp_path / 'run'}"))
    assert "last.ckpt" in line and line.startswith("error: resume=")


def test_resume_without_a_checkpoint_is_one_line(tmp_path):
    line = one_line(*run_cli_in_process(*COMMON, f"resume={tmp_path}"))
    assert "has no last.ckpt" in line
