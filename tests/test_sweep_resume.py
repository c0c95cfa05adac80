"""A grid sweep run again into its folder finishes what is missing and grows (expframe.sweep.resume):
real sweeps, killed with SIGKILL, grown, resumed by two processes at once, and run after conf/ was
edited."""

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from expframe.record import folder_lock
from expframe.record.files import CLAIMS_DIR
from expframe.report.grow import grow_command, more_seeds
from expframe.sweep import claims, resume
from expframe.sweep.private_apis import BasicSweeper
from tests.conftest import ROOT, run_cli, run_train_in_process

TINY = ["dataset=digits", "epochs=1", "logging.tensorboard=false", "energy.track=false", "checkpoint.save_model=false"]
GRID = ["optimizer=sgd,adam", "seed=0,1,2"]
# the check: two optimizers x three seeds, 4 epochs, a checkpoint after every epoch; one
# thread, as a busy machine may leave a run (float sums, and so the last digits, follow the count)
KILLED = ["-m", *GRID, "epochs=4", "checkpoint.every=1", "energy.track=false", "device.threads=1", "dataset=synthetic"]
KILLED += ["dataset.source.n_train=6000", "dataset.source.n_test=500"]
PER_RUN = [
    "status",
    "val_acc",
    "test_acc",
    "best_val_acc",
    "final_train_loss",
    "final_val_loss",
    "epochs_run",
    "n_params",
]


def plan_line(out: str) -> str:
    return next(line.split("] ", 1)[1] for line in out.splitlines() if "] sweep " in line)


def trained(out: str) -> list[str]:
    """The job folders a command trained, from its `ok: ... -> folder` lines."""
    return [Path(line.rsplit(" -> ", 1)[1]).name for line in out.splitlines() if "] - ok: " in line]


def names(sweep: Path, *patterns: str) -> list[str]:
    """The one job folder each pattern matches, by name."""
    found = [[p.name for p in sweep.glob(pattern)] for pattern in patterns]
    assert all(len(f) == 1 for f in found), found
    return sorted(f[0] for f in found)


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.rglob("*") if p.is_file()
    }


def per_run(sweep: Path) -> dict[str, dict[str, str]]:
    """summary.csv's per-run figures, by point (optimizer, seed)."""
    with open(sweep / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return {f"{r['optimizer']},{r['seed']}": {k: r[k] for k in PER_RUN} for r in rows}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished 6-job sweep (two optimizers x seeds 0-2), copied by the tests that change it."""
    sweep = tmp_path_factory.mktemp("finished") / "sweep"
    out = run_train_in_process("-m", *GRID, *TINY, f"hydra.sweep.dir={sweep}")
    assert out.returncode == 0, out.stderr
    assert plan_line(out.stdout) == f"sweep {sweep}: 6 points: 0 done, 0 to continue, 6 new"
    return sweep


def copied(finished: Path, tmp_path: Path) -> Path:
    sweep = tmp_path / "sweep"
    shutil.copytree(finished, sweep)
    return sweep


@pytest.mark.slow
def test_a_sweep_killed_mid_job_trains_only_what_is_missing_and_equals_one_never_stopped(tmp_path):
    sweep, whole = tmp_path / "killed", tmp_path / "whole"
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    command = [sys.executable, "train.py", *KILLED, f"hydra.sweep.dir={sweep}"]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:  # SIGKILL once job 3 has a checkpoint and two epochs to go
            history = list(sweep.glob("3_*/history.csv"))
            if history and len(history[0].read_text().splitlines()) == 3:
                break
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    [job3] = sweep.glob("3_*")
    assert (job3 / "last.ckpt").is_file() and not (job3 / "metrics.json").exists()
    finished_jobs = {p.name: snapshot(p) for p in sweep.glob("[012]_*")}
    assert len(finished_jobs) == 3 and all("metrics.json" in files for files in finished_jobs.values())

    out = run_train_in_process(*KILLED, f"hydra.sweep.dir={sweep}")
    assert out.returncode == 0, out.stderr
    assert plan_line(out.stdout) == f"sweep {sweep}: 6 points: 3 done, 1 to continue, 2 new"
    assert sorted(trained(out.stdout)) == sorted(p.name for p in sweep.glob("[345]_*"))
    assert f"continuing the job from {job3 / 'last.ckpt'}" in out.stdout
    assert {p.name: snapshot(p) for p in sweep.glob("[012]_*")} == finished_jobs, "finished jobs untouched"
    held = {h.folder: h.pid for h in map(claims.Holder.read, (sweep / CLAIMS_DIR).glob("*.json"))}
    assert sorted(held) == sorted(p.name for p in sweep.glob("*_*"))
    taken = sorted(folder for folder, pid in held.items() if pid == os.getpid())
    assert taken == sorted(p.name for p in sweep.glob("[345]_*")), "the dead process's unfinished points taken over"

    assert run_train_in_process(*KILLED, f"hydra.sweep.dir={whole}").returncode == 0
    assert per_run(sweep) == per_run(whole) and len(per_run(sweep)) == 6


def test_more_seeds_train_only_the_new_jobs_and_fewer_values_run_nothing(finished, tmp_path):
    sweep = copied(finished, tmp_path)
    before = {p.name: snapshot(p) for p in sweep.glob("*_*")}
    out = run_train_in_process("-m", "optimizer=sgd,adam", "seed=0,1,2,3", *TINY, f"hydra.sweep.dir={sweep}")
    assert out.returncode == 0, out.stderr
    assert plan_line(out.stdout) == f"sweep {sweep}: 8 points: 6 done, 0 to continue, 2 new"
    assert sorted(trained(out.stdout)) == names(sweep, "6_*optimizer=sgd,seed=3", "7_*optimizer=adam,seed=3")
    assert {p: snapshot(sweep / p) for p in before} == before
    assert len(per_run(sweep)) == 8 and "ok: 8 jobs" in out.stdout

    out = run_train_in_process("-m", "optimizer=adam", "seed=0,1", *TINY, f"hydra.sweep.dir={sweep}")
    assert out.returncode == 0, out.stderr
    line = plan_line(out.stdout)
    assert (
        line == f"sweep {sweep}: 2 points: 2 done, 0 to continue, 0 new (6 other job folders there: not in this grid)"
    )
    assert trained(out.stdout) == [] and "ok: 2 jobs" in out.stdout
    assert sorted(per_run(sweep)) == ["adam,0", "adam,1"], "the report covers the points the command names"
    assert f"expframe-report {sweep} covers them all" in out.stdout


def test_the_same_points_typed_otherwise_are_found_by_their_config(finished, tmp_path):
    """seed=range(0,3) and the preset-free order of keys: other overrides, the same configurations."""
    sweep = copied(finished, tmp_path)
    out = run_train_in_process("-m", "seed=range(0,3)", "optimizer=adam,sgd", *TINY, f"hydra.sweep.dir={sweep}")
    assert out.returncode == 0, out.stderr
    assert plan_line(out.stdout) == f"sweep {sweep}: 6 points: 6 done, 0 to continue, 0 new"
    out = run_train_in_process("-m", "optimizer=sgd", "optimizer.lr=0.01", "seed=0", *TINY, f"hydra.sweep.dir={sweep}")
    assert plan_line(out.stdout).endswith(
        ": 1 point: 1 done, 0 to continue, 0 new (5 other job folders there: not in this grid)"
    )


def test_resuming_a_finished_sweep_composes_no_point(finished):
    """A done point is found by its recorded digest of conf/ and overrides: composing it (~0.1 s)
    would make a 100-job resume take 10 s."""
    [grid] = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides([*GRID, *TINY]), None)
    digest = resume.conf_digest([ROOT / "conf"])

    def compose(overrides):
        raise AssertionError(f"composed {overrides}")

    plan = resume.plan(finished, grid, compose, digest, rerun_changed=False)
    assert [p.state for p in plan.points] == ["done"] * 6 and plan.to_run() == []
    assert sorted(p.folder for p in plan.points) == sorted(p.name for p in finished.glob("*_*"))


def test_a_point_a_live_process_runs_is_left_to_it_and_a_dead_ones_is_taken_over(finished, tmp_path):
    sweep = copied(finished, tmp_path)
    shutil.rmtree(next(sweep.glob("5_*")))
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        out = run_train_in_process("-m", *GRID, *TINY, f"hydra.sweep.dir={sweep}", "report.auto=false")
        assert trained(out.stdout) == names(sweep, "5_*optimizer=adam,seed=2")
        [folder] = names(sweep, "5_*")
        [claim] = [c for c in (sweep / CLAIMS_DIR).glob("*.json") if claims.Holder.read(c).folder == folder]
        shutil.rmtree(next(sweep.glob("5_*")))
        holder = {"folder": folder, "host": os.uname().nodename, "pid": live.pid}
        claim.write_text(json.dumps({**holder, "start": folder_lock.process_start(live.pid)}))
        out = run_train_in_process("-m", *GRID, *TINY, f"hydra.sweep.dir={sweep}", "report.auto=false")
        assert out.returncode == 0, out.stderr
        held = f"1 run by process {live.pid} on {os.uname().nodename}"
        assert plan_line(out.stdout) == f"sweep {sweep}: 6 points: 5 done, 0 to continue, 0 new, {held}"
        assert trained(out.stdout) == []
    finally:
        live.kill()
        live.wait()
    out = run_train_in_process("-m", *GRID, *TINY, f"hydra.sweep.dir={sweep}", "report.auto=false")
    assert plan_line(out.stdout).endswith("5 done, 0 to continue, 1 new") and len(trained(out.stdout)) == 1


@pytest.mark.slow
def test_two_resumes_started_at_once_train_each_missing_job_once(finished, tmp_path):
    sweep = copied(finished, tmp_path)
    command = ["train.py", "-m", "optimizer=sgd,adam", "seed=range(0,6)", *TINY, f"hydra.sweep.dir={sweep}"]
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    both = [
        subprocess.Popen(
            [sys.executable, *command], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in both]
    assert [p.returncode for p in both] == [0, 0], [err[-2000:] for _, err in outs]
    runs = [name for out, _ in outs for name in trained(out)]
    new = sorted(p.name for p in sweep.glob("*_*") if int(p.name.split("_")[0]) >= 6)
    assert sorted(runs) == new and len(new) == 6, (runs, new)
    lines = [plan_line(out) for out, _ in outs]
    # the second to plan finds the first's points held by it (or, had it started seconds later, done)
    assert all(re.search(r"12 points: \d+ done, 0 to continue, \d+ new", line) for line in lines), lines
    assert any(re.search(r", \d+ run by process \d+ on |: 12 done, ", line) for line in lines), lines


@pytest.mark.slow
def test_a_point_run_with_other_values_stops_the_command_unless_asked_to_run_it_anew(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    shutil.copytree(ROOT / "conf", project / "conf")
    shutil.copy(ROOT / "train.py", project)
    sweep = tmp_path / "sweep"
    command = ("-m", "optimizer=sgd,adam", *TINY, f"hydra.sweep.dir={sweep}", "report.auto=false")
    assert run_train_in_process(*command, script=project / "train.py").returncode == 0
    adam = project / "conf" / "optimizer" / "adam.yaml"
    adam.write_text(adam.read_text().replace("lr: 0.001", "lr: 0.002"))
    before = {p.name: snapshot(p) for p in sweep.glob("*_*")}
    out = run_train_in_process(*command, script=project / "train.py")
    assert out.returncode == 1 and out.stderr.count("\n") == 1, out.stderr
    held = r"1 job folder\(s\) \(1_[^)]*optimizer=adam\) hold points of this command run with other values of "
    held += "optimizer.lr "
    assert re.search(held, out.stderr), out.stderr
    assert "sweep.rerun_changed=true" in out.stderr and trained(out.stdout) == []
    assert {p.name: snapshot(p) for p in sweep.glob("*_*")} == before and "ok:" not in out.stdout
    out = run_train_in_process(*command, "sweep.rerun_changed=true", script=project / "train.py")
    assert out.returncode == 0, out.stderr
    assert plan_line(out.stdout).endswith(
        "2 points: 1 done, 0 to continue, 1 new (1 other job folder there: not in this grid)"
    )
    assert trained(out.stdout) == names(sweep, "2_*optimizer=adam"), "a new folder; the old one kept as it was"
    assert {p.name: snapshot(p) for p in sweep.glob("[01]_*")} == before


@pytest.mark.slow
def test_the_joblib_launcher_runs_only_the_new_jobs(finished, tmp_path):
    sweep = copied(finished, tmp_path)
    out = run_cli(
        "train.py",
        "-m",
        "optimizer=sgd,adam",
        "seed=0,1,2,3",
        *TINY,
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        f"hydra.sweep.dir={sweep}",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert plan_line(out.stdout + out.stderr) == f"sweep {sweep}: 8 points: 6 done, 0 to continue, 2 new"
    new = names(sweep, "6_*optimizer=sgd,seed=3", "7_*optimizer=adam,seed=3")
    assert all(json.loads((sweep / n / "metrics.json").read_text())["status"] == "ok" for n in new)


def test_the_report_prints_the_command_that_grows_the_sweep_to_the_seeds_it_needs(finished, tmp_path):
    sweep = copied(finished, tmp_path)
    done = run_cli("-m", "expframe.cli.report", str(sweep))
    assert done.returncode == 0, done.stderr
    needed = max(int(n) for n in re.findall(r"seeds needed .*: (\d+)", done.stdout))
    [command] = [line.strip() for line in done.stdout.splitlines() if line.strip().startswith("python train.py -m")]
    assert command == (
        f"python train.py -m optimizer=sgd,adam 'seed=range(0,{needed})' {' '.join(TINY)} hydra.sweep.dir={sweep}"
    )
    grown = [a.replace(f"range(0,{needed})", "range(0,4)") for a in __import__("shlex").split(command)[2:]]
    out = run_train_in_process(*grown, "report.auto=false")
    assert plan_line(out.stdout) == f"sweep {sweep}: 8 points: 6 done, 0 to continue, 2 new"


def test_seeds_that_are_not_a_range_keep_their_values():
    assert more_seeds([0, 1, 2], 5) == "range(0,5)"
    assert more_seeds([3, 7], 4) == "0,1,3,7"


def test_an_optuna_sweep_has_no_grow_command(tmp_path):
    OmegaConf.save(
        {"hydra": {"sweeper": {"_target_": "x.ResumableOptunaSweeper"}, "overrides": {"task": []}}},
        tmp_path / "multirun.yaml",
    )
    assert grow_command(tmp_path, [0, 1], 5) is None


@pytest.mark.parametrize(
    "name",
    ["0_optimizer=adam,seed=1", "1_+notes.who=o'brien", "2_a\\b", "3_x=${y}", "4_a\\'b", "5_ends\\", "6_sp ace,[x]"],
)
def test_a_folder_name_passes_through_a_quoted_override_unchanged(name):
    value = OverridesParser.create().parse_override(f"hydra.sweep.subdir={resume.quoted(name)}").value()
    assert OmegaConf.create({"subdir": value}).subdir == name


def test_a_claim_naming_a_folder_outside_the_sweep_is_not_followed(finished, tmp_path):
    """A sweep folder someone sends is input: its claims cannot move a job out of it."""
    sweep = copied(finished, tmp_path)
    [folder] = names(sweep, "5_*")
    shutil.rmtree(sweep / folder)
    [claim] = [c for c in (sweep / CLAIMS_DIR).glob("*.json") if claims.Holder.read(c).folder == folder]
    claim.write_text(json.dumps({"folder": "../../escaped", "host": os.uname().nodename, "pid": 1, "start": 0}))
    out = run_train_in_process("-m", *GRID, *TINY, f"hydra.sweep.dir={sweep}", "report.auto=false")
    assert out.returncode == 0, out.stderr
    assert trained(out.stdout) == [folder] and not (tmp_path / "escaped").exists()
    assert claims.Holder.read(claim).folder == folder
