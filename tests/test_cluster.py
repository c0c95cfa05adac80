"""The scale-out path against real servers: a single-node SLURM cluster and a PostgreSQL server,
started by tests.support.local_cluster (as root, Debian's packages). CI installs the packages and runs
these; elsewhere they skip, naming what is missing."""

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.support.documentation import documentation
from tests.support.local_cluster import local_cluster, missing_packages

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

ON_SLURM = ["hydra/launcher=submitit_slurm", "hydra.launcher.partition=debug", "hydra.launcher.cpus_per_task=1"]
TINY = ["dataset=digits", "epochs=1", "logging.tensorboard=false"]
# the README's commands for the local cluster, run here as written (shrunk by overrides appended at the end)
README = documentation()  # README.md and every docs/ page
TRY_SECTION = README.partition("### Try the cluster path on one machine")[2].split("\n## ", 1)[0]
TRY_LINES = [line.strip() for b in re.findall(r"```bash\n(.*?)```", TRY_SECTION, flags=re.S) for line in b.splitlines()]
README_SLURM = next(shlex.split(c)[2:] for c in TRY_LINES if "submitit_slurm" in c)
README_OPTUNA = next(shlex.split(c)[2:] for c in TRY_LINES if "hparams_search=optuna_tpe" in c)


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root (the local cluster runs slurmd and installs Debian packages)"
    missing = missing_packages(slurm=True, postgres=True)
    if missing:
        return f"needs Debian's {' '.join(missing)}: python -m tests.support.local_cluster --install"
    return None


@pytest.fixture(scope="module")
def cluster():
    reason = _unavailable()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the cluster tests: {reason}")
        pytest.skip(reason)
    with local_cluster(cpus=2) as running:
        yield running


def train(cluster, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"} | cluster.env
    return subprocess.run(
        [sys.executable, "train.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def jobs_of(sweep: Path) -> list[dict]:
    return [
        json.loads(p.read_text())
        for p in sorted(sweep.glob("*/metrics.json"), key=lambda p: int(p.parent.name.split("_")[0]))
    ]


def test_the_readme_card_grid_runs_as_slurm_jobs_with_one_sacct_line_at_most(cluster, tmp_path):
    assert README_SLURM[-2:] == ["optimizer=sgd,adam", "activation=relu,tanh"], "the card's grid"
    out = train(cluster, *README_SLURM, "epochs=1", f"hydra.sweep.dir={tmp_path}")
    assert out.returncode == 0, out.stderr[-3000:]
    jobs = jobs_of(tmp_path)
    assert [j["status"] for j in jobs] == ["ok"] * 4
    ids = [j["env"]["slurm_job_id"] for j in jobs]
    assert all(re.fullmatch(r"\d+_[0-3]", i) for i in ids) and len(set(ids)) == 4, ids
    assert {i.split("_")[0] for i in ids} == {ids[0].split("_")[0]}, "one array job for the grid"
    assert all(j["torch_threads"] == 1 for j in jobs), "threads from hydra.launcher.cpus_per_task"
    assert all(j["test_acc"] > 0.15 for j in jobs), "above chance (10 classes)"
    assert (tmp_path / ".submitit").is_dir(), "submitted through submitit"
    assert (tmp_path / "summary.md").exists() and "adam" in (tmp_path / "summary.md").read_text()
    assert len(re.findall("sacct", out.stdout + out.stderr)) <= 1


def test_a_job_cancelled_with_scancel_is_recorded_and_the_others_finish(cluster, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"} | cluster.env
    args = [*ON_SLURM, "dataset=digits", "logging.tensorboard=false", "epochs=2,3000", f"hydra.sweep.dir={tmp_path}"]
    sweep = subprocess.Popen(
        [sys.executable, "train.py", "-m", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        long_job = wait_for_running_epochs(tmp_path, 1, env)
        subprocess.run(["scancel", long_job], env=env, check=True)
        stdout, stderr = sweep.communicate(timeout=120)
    finally:
        sweep.kill()
    assert sweep.returncode == 0, stderr[-3000:]
    quick, cancelled = jobs_of(tmp_path)
    assert quick["status"] == "ok"
    assert cancelled["status"] == "interrupted" and f"SLURM job {long_job} ended CANCELLED" in cancelled["error"]
    assert cancelled["swept"]["epochs"] == 3000 and cancelled["seed"] == 0
    summary = (tmp_path / "summary.md").read_text()
    assert "interrupted" in summary


def test_a_grown_sweep_submits_only_its_new_jobs(cluster, tmp_path):
    """The grid resumes on SLURM as locally: the done jobs stay, one array of the new points is
    submitted, and their claims name the cluster's jobs (a point stays held while SLURM runs it)."""
    from expframe.record.files import CLAIMS_DIR
    from expframe.sweep import claims

    first = train(cluster, "-m", *ON_SLURM, *TINY, "seed=0,1", f"hydra.sweep.dir={tmp_path}")
    assert first.returncode == 0, first.stderr[-3000:]
    done = {p.name: p.read_bytes() for p in tmp_path.glob("*/metrics.json")}
    grown = train(cluster, "-m", *ON_SLURM, *TINY, "seed=0,1,2", f"hydra.sweep.dir={tmp_path}")
    assert grown.returncode == 0, grown.stderr[-3000:]
    assert f"sweep {tmp_path}: 3 points: 2 done, 0 to continue, 1 new" in grown.stdout + grown.stderr
    assert {p.name: p.read_bytes() for p in tmp_path.glob("[01]_*/metrics.json")} == done
    jobs = jobs_of(tmp_path)
    assert [j["status"] for j in jobs] == ["ok"] * 3
    first_array, new_job = (jobs[i]["env"]["slurm_job_id"].split("_")[0] for i in (0, 2))
    assert new_job != first_array and jobs[1]["env"]["slurm_job_id"].split("_")[0] == first_array
    held = [claims.Holder.read(c) for c in (tmp_path / CLAIMS_DIR).glob("*.json")]
    assert [h.slurm_job.split("_")[0] for h in held if h.folder.startswith("2_")] == [new_job]


def wait_for_running_epochs(sweep: Path, num: int, env: dict, timeout: float = 120) -> str:
    """The SLURM id of the sweep's job `num`, once it has started its epochs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = subprocess.run(
            ["squeue", "--array", "--noheader", "--states=RUNNING", "--format=%i"],
            env=env,
            capture_output=True,
            text=True,
        ).stdout.split()
        task = [j for j in running if j.endswith(f"_{num}")]
        if task and list(sweep.glob(f"{num}_*/.hydra")):
            time.sleep(1)  # into its training epochs
            return task[0]
        time.sleep(0.5)
    raise AssertionError("the long job never started")


def optuna_worker(cluster, sweep: Path, trials: int, storage: str | None = None) -> subprocess.Popen:
    """The README's command (its storage from EXPFRAME_STORAGE), or with `storage` typed instead."""
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"} | cluster.env
    args = [f"hydra.sweeper.storage={storage}" if storage and "storage=" in a else a for a in README_OPTUNA]
    args += ["hydra.sweeper.study_name=pg_tpe", f"hydra.sweeper.n_trials={trials}", *TINY, f"hydra.sweep.dir={sweep}"]
    return subprocess.Popen(
        [sys.executable, "train.py", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_workers_share_a_tpe_study_on_postgresql_and_one_killed_is_resumed(cluster, tmp_path):
    """The README's search command, started twice at once: once as written, once with the URL typed."""
    import optuna
    from optuna.trial import TrialState

    assert "hydra.sweeper.storage=${oc.env:EXPFRAME_STORAGE}" in README_OPTUNA
    password = re.search(r"://[^:]+:([^@]+)@", cluster.storage_url).group(1)
    workers = [
        optuna_worker(cluster, tmp_path / "a", 4, cluster.storage_url),
        optuna_worker(cluster, tmp_path / "b", 4),
    ]
    outputs = [w.communicate(timeout=300) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], [err[-2000:] for _, err in outputs]
    study = optuna.load_study(study_name="pg_tpe", storage=cluster.storage_url)
    assert sorted(t.number for t in study.trials) == list(range(8))
    assert all(t.state == TrialState.COMPLETE for t in study.trials)

    killed = optuna_worker(cluster, tmp_path / "c", 50)
    deadline = time.monotonic() + 120
    while len(list((tmp_path / "c").glob("*/metrics.json"))) < 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    killed.send_signal(signal.SIGKILL)
    killed.communicate()
    stale = [t for t in optuna.load_study(study_name="pg_tpe", storage=cluster.storage_url).trials]
    assert any(t.state == TrialState.RUNNING for t in stale), "the killed worker left its trial RUNNING"
    resumed = optuna_worker(cluster, tmp_path / "d", 1)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-2000:]
    trials = optuna.load_study(study_name="pg_tpe", storage=cluster.storage_url).trials
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert sorted(t.number for t in trials) == list(range(len(trials)))

    listed = subprocess.run(
        [
            str(Path(sys.executable).parent / "optuna"),
            "trials",
            "--study-name",
            "pg_tpe",
            "--storage",
            cluster.storage_url,
            "-f",
            "json",
        ],
        capture_output=True,
        text=True,
    )
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)) == len(trials)

    typed_record = next((tmp_path / "a").glob("*/.hydra/hydra.yaml")).read_text()
    assert "postgresql://expframe:***@127.0.0.1" in typed_record, "the typed URL is kept, its password masked"
    assert "${oc.env:EXPFRAME_STORAGE}" in next((tmp_path / "b").glob("*/.hydra/hydra.yaml")).read_text()
    leaked = subprocess.run(["grep", "-rl", password, str(tmp_path)], capture_output=True, text=True).stdout.split()
    assert leaked == [], f"the password is written in {leaked}"
    assert all(password not in out + err for out, err in outputs), "the password is printed"


def test_the_readme_shows_the_local_cluster_commands():
    assert "python -m tests.support.local_cluster" in TRY_LINES
    assert any("submitit_slurm" in line for line in TRY_LINES)
    assert any("${oc.env:EXPFRAME_STORAGE}" in line for line in TRY_LINES)


def test_the_script_prints_what_a_shell_needs_and_leaves_nothing_behind(cluster):
    """Beside the fixture's servers (which it must not touch), the README's command as written:
    it prints the two lines; Ctrl-C stops its servers and deletes their folder."""
    script = subprocess.Popen(
        [sys.executable, "-m", "tests.support.local_cluster"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = [script.stdout.readline().strip() for _ in range(2)]
        exports = dict(re.fullmatch(r"export (\w+)='(.*)'", line).groups() for line in lines)
        assert set(exports) == {"SLURM_CONF", "EXPFRAME_STORAGE"}, lines
        assert exports["SLURM_CONF"] != cluster.env["SLURM_CONF"]
        assert exports["EXPFRAME_STORAGE"] != cluster.storage_url
        sinfo = subprocess.run(
            ["sinfo", "-h", "-o", "%P %t"], env={**os.environ, **exports}, capture_output=True, text=True
        )
        assert sinfo.stdout.split() == ["debug*", "idle"], sinfo.stderr
        as_user = [
            "runuser",
            "-u",
            "nobody",
            "--",
            "env",
            f"SLURM_CONF={exports['SLURM_CONF']}",
            "sinfo",
            "-h",
            "-o",
            "%t",
        ]
        user = subprocess.run(as_user, capture_output=True, text=True)
        assert user.stdout.strip() == "idle", f"another user's terminal reaches the cluster: {user.stderr}"
        folder = Path(exports["SLURM_CONF"]).parents[1]
        script.send_signal(signal.SIGINT)
        assert script.wait(timeout=30) == 0
    finally:
        script.kill()
    assert not folder.exists()
    assert subprocess.run(["pgrep", "-f", str(folder)], capture_output=True).stdout == b"", "a server outlived it"
    still = subprocess.run(
        ["sinfo", "-h", "-o", "%t"], env={**os.environ, **cluster.env}, capture_output=True, text=True
    )
    assert still.stdout.strip() == "idle", "the other cluster is untouched"


def test_the_readme_slurm_benchmark_runs_through_the_script(cluster):
    """`python -m tests.support.local_cluster -- COMMAND` as the README writes it: a cluster of its own
    for the command, beside the fixture's, the benchmark's figures printed, one repeat."""
    command = next(shlex.split(c) for c in TRY_LINES if "--slurm" in c)
    env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "SLURM_CONF", "EXPFRAME_STORAGE")}
    out = subprocess.run(
        [sys.executable, *command[1:], "--repeats", "1", "--epochs", "1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    card = re.search(r"card sweep .*: basic ([\d.]+) s, SLURM ([\d.]+) s, SLURM / basic = ([\d.]+)", out.stdout)
    assert card and float(card.group(2)) > 0 and float(card.group(3)) > 0, out.stdout
    assert re.search(r"submission overhead per job -?[\d.]+ s", out.stdout), out.stdout


def test_a_password_with_a_slash_a_space_or_escapes_is_masked_in_every_file_and_line(cluster, tmp_path):
    """A role whose password holds `/` and a space, reached three ways: typed raw, typed
    percent-escaped, and through `${oc.env:...}`; neither spelling of it is written or printed."""
    check_password_masking(cluster.storage_url, cluster.env, tmp_path)


def check_password_masking(storage_url: str, env: dict, tmp_path: Path) -> None:
    from urllib.parse import quote

    import psycopg
    from psycopg import sql

    password = "s3/cr et pw"
    with psycopg.connect(storage_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP ROLE IF EXISTS tricky"))
        conn.execute(sql.SQL("CREATE ROLE tricky LOGIN SUPERUSER PASSWORD {}").format(sql.Literal(password)))
    server = storage_url.split("@", 1)[1]
    escaped = quote(password, safe="")
    forms = {
        "raw": f"postgresql+psycopg://tricky:{password}@{server}",
        "escaped": f"postgresql+psycopg://tricky:{escaped}@{server}",
        "env": "${oc.env:TRICKY_STORAGE}",
    }
    run_env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"} | env
    run_env["TRICKY_STORAGE"] = forms["raw"]
    printed = []
    for name, storage in forms.items():
        done = subprocess.run(
            [
                sys.executable,
                "train.py",
                "-m",
                "hparams_search=optuna_tpe",
                f"hydra.sweeper.storage={storage}",
                f"hydra.sweeper.study_name=tricky_{name}",
                "hydra.sweeper.n_trials=1",
                *TINY,
                f"hydra.sweep.dir={tmp_path / name}",
            ],
            cwd=ROOT,
            env=run_env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert len(list((tmp_path / name).glob("*/metrics.json"))) == 1
        printed.append(done.stdout + done.stderr)
    for secret in (password, escaped, "s3/cr", "cr et"):
        leaked = subprocess.run(["grep", "-rlF", secret, str(tmp_path)], capture_output=True, text=True).stdout.split()
        assert leaked == [], f"{secret!r} is written in {leaked}"
        assert all(secret not in text for text in printed), f"{secret!r} is printed"
    assert "tricky:***@" in next((tmp_path / "raw").glob("*/.hydra/hydra.yaml")).read_text()
