"""Folders written before the package took its layers still load: a run (tests/fixtures/run_before_layers: a
2-epoch run on digits with checkpoint.every=1, written by commit eec79d4) still loads in the report,
`expframe-eval`, `expframe-deploy` and resume, and the card sweep (sweep_before_layers) in the report:
a folder on disk outlives the code that wrote it."""

import json
import shutil
from pathlib import Path

import pytest

from expframe.cli.deploy import main as deploy_main
from expframe.cli.report import main as report_main
from expframe.cli.rescore import rescore
from expframe.report.format import number
from tests.conftest import run_train_in_process

FIXTURE = Path(__file__).parent / "fixtures" / "run_before_layers"
SWEEP = Path(__file__).parent / "fixtures" / "sweep_before_layers"


@pytest.fixture
def old_run(tmp_path) -> Path:
    """A copy: eval, deploy and resume write into a run folder, the fixture stays as it was."""
    return Path(shutil.copytree(FIXTURE, tmp_path / "run"))


def test_the_fixture_is_the_old_layout():
    saved = (FIXTURE / ".hydra" / "hydra.yaml").read_text()
    assert "expframe.compose_once.ComposeOnceSweeper" in saved and "expframe.callbacks.ExpframeCallback" in saved


def test_the_report_reads_an_old_run_folder(old_run, tmp_path, capsys):
    report_main([str(old_run), "--out", str(tmp_path / "report"), "--no-figures"])
    table = (tmp_path / "report" / "summary.md").read_text()
    recorded = json.loads((old_run / "metrics.json").read_text())
    assert "| ok " in table and number(recorded["test_acc"]) in table


def test_eval_rescores_an_old_run_folder_to_its_recorded_accuracy(old_run):
    scored = rescore(old_run)
    assert scored["test_acc"] == scored["recorded_test_acc"]


def test_deploy_measures_an_old_run_folder(old_run, capsys):
    deploy_main([str(old_run), "--variants", "fp32", "int8_dynamic"])
    served = json.loads((old_run / "deploy.json").read_text())["variants"]
    assert set(served) == {"fp32", "int8_dynamic"} and served["fp32"]["agreement"] == 1.0
    assert "deploy_int8_dynamic_p95_ms" in json.loads((old_run / "metrics.json").read_text())


def test_an_old_run_folder_resumes(old_run):
    args = ["dataset=digits", "checkpoint.every=1", "logging.tensorboard=false", "epochs=3"]
    done = run_train_in_process(*args, f"resume={old_run}")
    assert done.returncode == 0, done.stderr
    metrics = json.loads((old_run / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["epochs_run"] == 3
    assert len((old_run / "history.csv").read_text().splitlines()) == 1 + 3


def test_the_report_reads_an_old_sweep_folder(tmp_path, capsys):
    """The card sweep (optimizer x activation, one seed, 1 epoch on digits) written by the old layout."""
    report_main([str(SWEEP), "--out", str(tmp_path / "report"), "--no-figures"])
    table = (tmp_path / "report" / "summary.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and "| ok " in line]
    assert len(rows) >= 4 and "val_acc (rows activation, columns optimizer)" in table


def test_an_old_sweep_resumes_by_its_configs_and_names_the_key_it_ran_without(tmp_path):
    """Its jobs record no digest of conf/: they are compared by their saved configs. They ran before
    energy.attribution existed (as `machine`): the command names that key, and with it finds them all."""
    sweep = Path(shutil.copytree(SWEEP, tmp_path / "sweep"))
    grid = ["-m", "optimizer=sgd,adam", "activation=relu,tanh", "dataset=digits", "epochs=1"]
    grid += [
        "logging.tensorboard=false",
        "checkpoint.save_model=false",
        "report.auto=false",
        f"hydra.sweep.dir={sweep}",
    ]
    out = run_train_in_process(*grid)
    assert (
        out.returncode == 1 and "4 job folder(s)" in out.stderr and "other values of energy.attribution " in out.stderr
    )
    out = run_train_in_process(*grid, "energy.attribution=machine")
    assert out.returncode == 0, out.stderr
    assert f"sweep {sweep}: 4 points: 4 done, 0 to continue, 0 new" in out.stdout
