"""Real Hydra sweeps in subprocesses: grids, presets, Optuna studies in SQLite, failures, launchers."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from expframe.record import catalogue as figures
from tests.conftest import ROOT, run_cli, run_train_in_process

# end-to-end: every test starts python train.py -m (the quick tier leaves them out; CI runs them)
pytestmark = pytest.mark.slow


def jobs(sweep_dir):
    folders = (p for p in sweep_dir.iterdir() if (p / ".hydra").is_dir())
    return sorted(folders, key=lambda p: int(p.name.split("_")[0]))


def metrics(job):
    return json.loads((job / "metrics.json").read_text())


def test_two_by_two_grid_runs_four_jobs(tmp_path):
    out = run_train_in_process(
        "-m", "optimizer=sgd,adam", "activation=relu,tanh", "epochs=1", f"hydra.sweep.dir={tmp_path}"
    )
    assert out.returncode == 0, out.stderr
    folders = jobs(tmp_path)
    assert len(folders) == 4
    assert folders[3].name == "3_activation=tanh,epochs=1,optimizer=adam"
    for job in folders:
        assert metrics(job)["status"] == "ok" and (job / "history.csv").exists()
    assert "ok: 4 jobs" in out.stderr + out.stdout


def test_sweep_folders_are_named_to_the_microsecond():
    """Two sweeps started in the same second must not share a folder."""
    raw = (ROOT / "conf" / "train.yaml").read_text()
    assert "dir: multirun/${now:%Y-%m-%d}/${now:%H-%M-%S-%f}" in raw
    assert "subdir: ${hydra.job.num}_${expframe_capped:${hydra_override_dirname:" in raw


def test_a_long_override_list_still_makes_a_folder_name():
    from expframe import capped_folder_name

    short = "optimizer=adam,seed=1"
    assert capped_folder_name(short) == short
    names = [capped_folder_name(",".join(f"key{i}=0.{i}23456789012345" for i in range(40)) + tail) for tail in "ab"]
    assert all(len(n.encode()) <= 200 for n in names) and names[0] != names[1], "cut, and still unique"


def test_failures_do_not_stop_the_sweep(tmp_path):
    out = run_train_in_process(
        "-m",
        "dataset.val_fraction=0.1,0.9999",
        "optimizer.lr=0.01,1e10",
        "epochs=2",
        f"hydra.sweep.dir={tmp_path}",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    statuses = {j.name: metrics(j)["status"] for j in jobs(tmp_path)}
    assert sorted(statuses.values()) == ["diverged", "failed", "failed", "ok"]
    failed = [metrics(j) for j in jobs(tmp_path) if metrics(j)["status"] == "failed"]
    assert all("leaves 0 of 4000" in m["error"] for m in failed)
    log = out.stderr + out.stdout
    assert "failed: 2 jobs" in log and "diverged: 1 job" in log and "ok: 1 job" in log


def test_sweep_value_errors_fail_before_any_job(tmp_path):
    out = run_train_in_process("-m", "optimizer.lr=0.1,-1", f"hydra.sweep.dir={tmp_path / 's'}")
    assert out.returncode != 0 and "optimizer.lr=-1" in out.stderr
    assert not (tmp_path / "s").exists()


def optuna_cli(tmp_path, *args, sweep="s"):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    return storage, run_train_in_process(
        "-m", *args, "epochs=1", f"hydra.sweeper.storage={storage}", f"hydra.sweep.dir={tmp_path / sweep}"
    )


def test_optuna_tpe_study_is_stored_and_resumes(tmp_path):
    storage, out = optuna_cli(tmp_path, "hparams_search=optuna_tpe", "hydra.sweeper.n_trials=3")
    assert out.returncode == 0, out.stderr[-3000:]
    study = optuna.load_study(study_name="tpe_mnist_5k", storage=storage)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    assert set(study.trials[0].params) == {
        "model.depth",
        "model.width",
        "optimizer.lr",
        "model.dropout",
        "optimizer",
        "activation",
    }
    _, out = optuna_cli(tmp_path, "hparams_search=optuna_tpe", "hydra.sweeper.n_trials=2", sweep="s2")
    assert out.returncode == 0, out.stderr[-3000:]
    study = optuna.load_study(study_name="tpe_mnist_5k", storage=storage)
    assert len(study.trials) == 5 and all(t.state == TrialState.COMPLETE for t in study.trials)
    resumed = [metrics(j) for j in jobs(tmp_path / "s2")]
    assert [r["swept"]["trial"] for r in resumed] == [3, 4], "job numbers restart, trial numbers go on"
    for r in resumed:
        trial = study.trials[r["swept"]["trial"]]
        assert trial.value == r["val_acc"] and all(r["swept"][k] == v for k, v in trial.params.items())
    summary = (tmp_path / "s2" / "summary.md").read_text()
    assert summary.startswith("| trial ")
    best = study.best_trial
    where = f"trial {best.number}" if best.number >= 3 else "a trial outside these folders"
    assert f"- {where}: value {best.value:.4g}" in summary
    listing = subprocess.run(
        [
            str(Path(sys.executable).parent / "optuna"),
            "trials",
            "--storage",
            storage,
            "--study-name",
            "tpe_mnist_5k",
            "-f",
            "json",
        ],
        capture_output=True,
        text=True,
    )
    assert listing.returncode == 0 and len(json.loads(listing.stdout)) == 5


TINY_GRID = """# @package _global_
defaults:
  - optuna_grid
hydra:
  sweeper:
    study_name: tiny_grid
    params:
      model.depth: choice(1)
      model.width: choice(16, 32)
      optimizer.lr: choice(0.1)
      scheduler: choice(none, step)
"""


def test_interrupted_grid_resumes_only_missing_points(tmp_path):
    conf = tmp_path / "conf" / "hparams_search"
    conf.mkdir(parents=True)
    (conf / "tiny_grid.yaml").write_text(TINY_GRID)
    args = ("--config-dir", str(tmp_path / "conf"), "hparams_search=tiny_grid")
    storage, out = optuna_cli(tmp_path, *args, "hydra.sweeper.n_trials=2")
    assert out.returncode == 0, out.stderr[-3000:]
    study = optuna.load_study(study_name="tiny_grid", storage=storage)
    assert sum(t.state == TrialState.COMPLETE for t in study.trials) == 2
    study.ask()  # what a killed sweep leaves behind: a trial RUNNING forever
    _, out = optuna_cli(tmp_path, *args, sweep="s2")
    assert out.returncode == 0, out.stderr[-3000:]
    study = optuna.load_study(study_name="tiny_grid", storage=storage)
    states = [t.state for t in study.trials]
    assert TrialState.RUNNING not in states and states.count(TrialState.FAIL) == 1
    complete = [t.params for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 4
    assert {(p["model.width"], p["scheduler"]) for p in complete} == {
        (16, "none"),
        (16, "step"),
        (32, "none"),
        (32, "step"),
    }
    _, out = optuna_cli(tmp_path, *args, sweep="s3")
    assert out.returncode == 0 and len(optuna.load_study(study_name="tiny_grid", storage=storage).trials) == 5


def test_optuna_pareto_two_objectives(tmp_path):
    # no report worker: its start-up (pandas, matplotlib) would load the CPUs beside the first trial,
    # whose speed objective is then flagged contended and the trial failed (docs/shared-machines.md)
    storage, out = optuna_cli(tmp_path, "hparams_search=optuna_pareto", "hydra.sweeper.n_trials=3", "report.auto=false")
    assert out.returncode == 0, out.stderr[-3000:]
    study = optuna.load_study(study_name="pareto_mnist_5k", storage=storage)
    assert len(study.directions) == 2 and all(len(t.values) == 2 for t in study.trials)
    assert study.best_trials


def test_two_workers_share_one_study(tmp_path):
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    common = [
        "train.py",
        "-m",
        "hparams_search=optuna_tpe",
        "hydra.sweeper.n_trials=3",
        "epochs=1",
        "dataset=digits",
        f"hydra.sweeper.storage={storage}",
        "hydra.sweeper.study_name=shared",
    ]
    workers = [
        subprocess.Popen(
            [sys.executable, *common, f"hydra.sweep.dir={tmp_path / f'w{i}'}"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    for w in workers:
        _, err = w.communicate(timeout=600)
        assert w.returncode == 0, err[-3000:]
    trials = optuna.load_study(study_name="shared", storage=storage).trials
    assert len(trials) == 6 and all(t.state == TrialState.COMPLETE for t in trials)


def test_submitit_local_launcher_runs_each_job_in_its_own_process(tmp_path):
    out = run_cli(
        "train.py",
        "-m",
        "hydra/launcher=submitit_local",
        "optimizer=sgd,adam",
        "epochs=1",
        "dataset=digits",
        f"hydra.sweep.dir={tmp_path}",
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert [metrics(j)["status"] for j in jobs(tmp_path)] == ["ok", "ok"]


def start_sweep(sweep_dir: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "train.py", "-m", *args, "logging.tensorboard=false", f"hydra.sweep.dir={sweep_dir}"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(condition, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.2)


def history_rows(job: Path) -> list[dict]:
    try:
        return list(csv.DictReader((job / "history.csv").open()))
    except OSError:
        return []


def test_ctrl_c_in_a_sweep_records_the_job_stops_the_sweep_and_reports(tmp_path):
    proc = start_sweep(tmp_path, "seed=0,1,2,3", "epochs=100000", "dataset=digits")
    wait_for(lambda: any(len(history_rows(j)) >= 3 for j in tmp_path.glob("0_*")))
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert [j.name.split("_")[0] for j in jobs(tmp_path)] == ["0"], "no job starts after Ctrl-C"
    record = metrics(jobs(tmp_path)[0])
    rows = history_rows(jobs(tmp_path)[0])
    assert record["status"] == "interrupted" and record["epochs_run"] == len(rows) >= 3
    assert record["val_acc"] == pytest.approx(float(rows[-1]["val_acc"])) and record["test_acc"] is None
    assert "interrupted: 1 job" in out + err and "Traceback" not in err
    assert "| interrupted" in (tmp_path / "summary.md").read_text()


def test_ctrl_c_in_a_single_run_is_one_line_and_exit_130(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "train.py", "epochs=100000", "dataset=digits", f"hydra.run.dir={tmp_path}"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(lambda: len(history_rows(tmp_path)) >= 2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    lines = (out + err).strip().splitlines()
    assert len(lines) == 1 and "interrupted:" in lines[0] and "finished epochs recorded" in lines[0], lines
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["status"] == "interrupted" and record["epochs_run"] == len(history_rows(tmp_path)) >= 2
    assert record["final_train_loss"] is not None and not (tmp_path / "model.pt").exists()


def test_kill_9_leaves_finished_jobs_intact_and_the_report_skips_the_partial_one(tmp_path, caplog):
    proc = start_sweep(tmp_path, "seed=0,1,2,3,4,5,6,7", "epochs=40", "+dataset.source.repeat=3", "report.auto=false")
    wait_for(lambda: len(list(tmp_path.glob("*/metrics.json"))) >= 1)
    time.sleep(1.0)
    proc.kill()
    proc.communicate(timeout=60)
    finished = list(tmp_path.glob("*/metrics.json"))
    assert 1 <= len(finished) < 8
    assert all(json.loads(p.read_text())["status"] == "ok" for p in finished)
    for job in jobs(tmp_path):
        rows = history_rows(job)
        assert all(list(r) == ["epoch", *figures.names(figures.per_epoch())] for r in rows)
        assert all(r["val_acc"] and r["train_loss"] and r["epoch_time_s"] for r in rows), "no row cut short"
    from expframe.report.summary import find_runs, report

    runs, incomplete, skipped = find_runs([tmp_path])
    assert len(runs) == len(finished) and len(incomplete) == 1 and skipped == []
    report([tmp_path], tmp_path, plots=False)
    assert any("skipped incomplete job folder" in r.message for r in caplog.records)


def test_ctrl_c_in_an_optuna_study_fails_the_trial_and_unregisters_the_worker(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    proc = start_sweep(
        tmp_path / "s",
        "hparams_search=optuna_tpe",
        "hydra.sweeper.n_trials=3",
        "epochs=100000",
        "dataset=digits",
        f"hydra.sweeper.storage={storage}",
        "hydra.sweeper.study_name=interrupted",
    )
    wait_for(lambda: any(len(history_rows(j)) >= 2 for j in (tmp_path / "s").glob("0_*")))
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    study = optuna.load_study(study_name="interrupted", storage=storage)
    assert [t.state for t in study.trials] == [TrialState.FAIL], "told FAIL, not left RUNNING"
    assert not [v for k, v in study.user_attrs.items() if k.startswith("worker:") and v], "worker unregistered"
    assert metrics(jobs(tmp_path / "s")[0])["status"] == "interrupted"


def test_jobs_in_one_process_do_not_inherit_state(tmp_path):
    """Thread count and log handlers end with their job; each job logs its own summary once."""
    out = run_cli(
        "train.py", "-m", "device.threads=1,null", "epochs=1", "dataset=digits", f"hydra.sweep.dir={tmp_path}"
    )
    assert out.returncode == 0, out.stderr[-3000:]
    first, second = jobs(tmp_path)
    assert metrics(first)["env"]["torch_threads"] == 1
    if os.cpu_count() > 1:
        assert metrics(second)["env"]["torch_threads"] > 1
    for job in (first, second):
        assert (job / "train.log").read_text().count("ok: val_acc=") == 1


def test_a_big_job_does_not_inflate_the_next_jobs_peak_memory(tmp_path):
    """Peak RSS is reset per job and a finished job's model, gradients and heap pages are released."""
    out = run_cli(
        "train.py",
        "-m",
        "model.width=4096,16",
        "model.depth=2",
        "epochs=1",
        "dataset=digits",
        "report.auto=false",
        f"hydra.sweep.dir={tmp_path}",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    big, small = (metrics(j) for j in jobs(tmp_path))
    assert big["peak_rss_scope"] == small["peak_rss_scope"] == "run"
    # the big job holds ~2 x 64 MB of weights and gradients for its 4096 x 4096 layer alone
    assert small["peak_rss_bytes"] < big["peak_rss_bytes"] - 100 * 2**20
