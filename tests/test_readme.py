"""Every command the README and docs/ show runs as written, shrunk to tiny sizes by overrides appended at the end."""

import json
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from tests.conftest import CONF, ROOT, run_cli, run_train_in_process
from tests.support.documentation import documentation

# end-to-end: the README's commands as a user runs them (the quick tier leaves them out; CI runs them)
pytestmark = pytest.mark.slow

README = documentation()  # README.md and every docs/ page
# the local cluster's commands need its servers (root, Debian's packages): tests/test_cluster.py runs them
TRY_CLUSTER = README.partition("### Try the cluster path on one machine")[2].split("\n## ", 1)[0]
BLOCKS = re.findall(r"```bash\n(.*?)```", README.replace(TRY_CLUSTER, ""), flags=re.S)
LINES = [line.strip() for block in BLOCKS for line in block.splitlines()]
# each command once, though a page may repeat one the README shows
COMMANDS = list(dict.fromkeys(line for line in LINES if line.startswith("python ")))
LOOPS = [line for line in LINES if line.startswith("for ")]
# commands quoted inline in the text, beyond the bash blocks and the axis table the loop covers
INLINE = sorted(
    {
        " ".join(c.split())  # a command quoted across a line break is the command on one line
        for c in re.findall(r"`(python (?:train\.py|-m tests\.benchmark)[^`]*)`", README.replace(TRY_CLUSTER, ""))
    }
    - set(COMMANDS)
)
INLINE = [c for c in INLINE if not re.fullmatch(r"python train\.py -m \+experiment=\w+", c)]


def test_readme_shows_install_run_and_test():
    text = (ROOT / "README.md").read_text()
    assert '```bash\npip install -e ".[dev]"\npython train.py\n```' in text
    assert '```bash\npip install -e ".[dev]"\npytest\n```' in text
    assert len(COMMANDS) >= 5


def shrink(args: list[str], tmp_path, tiny_mnist_root, images: dict | None = None) -> list[str]:
    if "--help" in args:
        return args
    if args[:2] == ["-m", "tests.benchmark_images"]:
        return [*args[:2], "--images", "120", "--size", "32", "--epochs", "2"]
    if args[:2] == ["-m", "tests.benchmark_shift"]:
        return [*args[:2], "--images", "200", "--repeats", "1", "--no-run"]
    if args[:2] == ["-m", "tests.benchmark_data"]:
        return [*args[:2], "--images", "240", "--size", "32", "--steps", "2", "--repeats", "1"]
    if args[:2] == ["-m", "tests.benchmark_drift"]:
        return [*args[:2], "--draws", "5", "--seeds", "2", "--shifts", "gaussian_noise", "--repeats", "1"]
    if any(a.startswith("retrain.from=") for a in args):  # the page's parent run is an example: train one
        parent = tmp_path / "parent"
        if not parent.exists():
            done = run_train_in_process("epochs=1", "energy.track=false", f"hydra.run.dir={parent}")
            assert done.returncode == 0, done.stderr
        args = [f"retrain.from={parent}" if a.startswith("retrain.from=") else a for a in args]
    if args[:3] == ["-m", "tests.benchmark", "--vit"]:
        return [*args[:3], "--samples", "4000", "--epochs", "2", "--repeats", "1"]
    if args[:3] == ["-m", "tests.benchmark", "--sweep-resume"]:
        return [*args[:3], "5", "--repeats", "1"]
    if args[:2] == ["-m", "tests.benchmark"]:
        return [
            *args,
            "--samples",
            "4000",
            "--epochs",
            "2",
            "--repeats",
            "1",
            "--sweep-jobs",
            "2",
            "--parallel-epochs",
            "1",
            "--quick",
        ]
    extra = ["epochs=1"]
    if "-m" in args or "--multirun" in args:
        extra.append(f"hydra.sweep.dir={tmp_path / 'sweep'}")
    if any(a.startswith("hparams_search=") for a in args):
        extra += ["hydra.sweeper.n_trials=2", f"hydra.sweeper.storage=sqlite:///{tmp_path / 'study.db'}"]
    else:
        extra.append(f"hydra.run.dir={tmp_path / 'run'}")
    if "dataset=mnist" in args:
        extra += [f"dataset.root={tiny_mnist_root}", "dataset.download=false"]
    if "deploy=cpu" in args:  # the serving measurements at their smallest: the variants all still run
        extra += ["deploy.load_seconds=0.05", "deploy.timed_calls=20", "deploy.warmup_calls=5"]
        extra.append("deploy.throughput_calls=2")
    if "dataset=mvtec" in args:
        extra += [f"dataset.root={images['mvtec_published']}", "dataset.category=bottle", "dataset.image_size=32"]
        extra.append(f"dataset.cache_dir={tmp_path / 'cache'}")
    if "dataset=image_folder" in args:
        layout = "mvtec" if any(a.startswith("dataset.classes=") for a in args) else "xray"
        extra += [f"dataset.root={images[layout]}", "dataset.image_size=32", f"dataset.cache_dir={tmp_path / 'cache'}"]
    if "device=cuda" in args and not torch.cuda.is_available():  # the command as written, on this machine's CPU
        args = ["device=cpu" if a == "device=cuda" else a for a in args]
    return args + extra


def in_process(args: list[str]) -> bool:
    """Real processes for what needs one: the quick start as a user types it, --help, and launchers
    that run jobs in other processes (they unpickle the task from its module, in-process runpy's)."""
    return (
        args[:1] == ["train.py"] and len(args) > 1 and "--help" not in args and not any("launcher=" in a for a in args)
    )


def run_readme(args: list[str]) -> subprocess.CompletedProcess:
    return run_train_in_process(*args[1:]) if in_process(args) else run_cli(*args)


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_runs(command, tmp_path, tiny_mnist_root, tiny_image_roots):
    args = shlex.split(command)[1:]
    if any(a.startswith("resume=") for a in args):  # the README's run folder is an example: make one
        first = [a for a in args if not a.startswith("resume=")]
        assert run_readme(shrink(first, tmp_path, tiny_mnist_root)).returncode == 0
        args = [f"resume={tmp_path / 'run'}" if a.startswith("resume=") else a for a in args]
    out = run_readme(shrink(args, tmp_path, tiny_mnist_root, tiny_image_roots))
    assert out.returncode == 0, f"{command}\n{out.stderr[-2000:]}"
    if "--help" in args:
        assert "dataset:" in out.stdout
    elif "--shared-machine" in args:
        rows = [line.split() for line in out.stdout.splitlines() if line.startswith(("mlp ", "cnn "))]
        cells = {(r[0], r[1], r[2]) for r in rows}
        assert cells == {(m, t, s) for m in ("mlp", "cnn") for t in ("default", "1") for s in ("idle", "busy")}
        busy_default = [r for r in rows if r[1:3] == ["default", "busy"]]
        assert all(int(r[3]) == 1 for r in busy_default), "beside a busy loop per core: one thread"
        ratios = re.findall(r"epoch time ([\d.]+), energy ([\d.]+), wall ([\d.]+)", out.stdout)
        assert len(ratios) == 4 and all(float(v) > 0 for r in ratios for v in r)
    elif "--sweep-resume" in args:
        per_job = float(re.search(r"([\d.-]+) ms per done job", out.stdout).group(1))
        assert "5 done jobs" in out.stdout and per_job < 1000, out.stdout
    elif "--report-time" in args:
        assert float(re.search(r"card sweep report \(this checkout\): ([\d.]+) s", out.stdout).group(1)) > 0
    elif "--whole-process" in args:
        labels = ("import torch:", "import torch._dynamo after it", "card sweep (2x2, report included):", "single run")
        for label in (*labels, "the same job hand-written", "per-job fixed cost"):
            assert label in out.stdout, out.stdout
        assert float(re.search(r"single run / hand-written = ([\d.]+)", out.stdout).group(1)) > 0
        assert 0 < float(re.search(r"report on disk\): ([\d.]+) s", out.stdout).group(1)) < 10
    elif args[:2] == ["-m", "tests.benchmark_shift"]:
        assert float(re.search(r"ratio ([\d.]+)x faster", out.stdout).group(1)) > 1, out.stdout
        assert re.search(r"all of shift=standard \(70 pairs\): [\d.]+ s", out.stdout), out.stdout
    elif args[:3] == ["-m", "tests.benchmark", "--vit"]:
        assert re.search(r"tiny ViT: expframe / floor = [\d.]+", out.stdout), out.stdout
    elif args[:2] == ["-m", "tests.benchmark_drift"]:
        calibration = re.findall(r"^\| (\d+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|$", out.stdout, flags=re.M)
        assert [c[0] for c in calibration] == ["10", "100", "500", "1000"], out.stdout
        assert re.search(r"largest difference 0\.0e\+00", out.stdout), "the KS p-values are scipy's"
        assert re.search(r"KS [\d.]+ ms, MMD \(100 permutations\) [\d.]+ ms", out.stdout)
    elif args[:2] == ["-m", "tests.benchmark"]:
        rows = [line.split() for line in out.stdout.splitlines() if line.startswith(("a_", "b_", "c_"))]
        assert [r[0] for r in rows] == ["a_course_loop", "b_expframe", "c_floor"]
        assert all(float(r[3]) > 0.5 for r in rows), "every contender must learn"
        assert float(re.search(r"b/a = ([\d.]+)", out.stdout).group(1)) < 1.0
        assert re.search(r"per-job fixed cost [\d.]+ s", out.stdout)
    elif "-m" not in args:
        assert '"status": "ok"' in (tmp_path / "run" / "metrics.json").read_text()
    else:
        assert (tmp_path / "sweep" / "summary.md").exists(), "every sweep ends with its report"


def test_readme_inline_commands_are_found():
    assert any("hydra/launcher=joblib" in c for c in INLINE) and any("submitit_slurm" in c for c in INLINE)


@pytest.mark.parametrize("command", INLINE)
def test_readme_inline_command_runs(command, tmp_path, tiny_mnist_root):
    """A SLURM command cannot run without a cluster: it must compose, with the keys the README names."""
    args = shlex.split(command)[1:]
    if "hydra/launcher=submitit_slurm" in args:
        overrides = [a for a in args if a not in ("train.py", "-m")]
        with initialize_config_dir(config_dir=str(CONF)):
            cfg = compose("train", overrides, return_hydra_config=True)
        launcher = cfg.hydra.launcher
        assert launcher._target_.endswith("SlurmLauncher")
        assert (launcher.partition, launcher.gpus_per_node, launcher.timeout_min) == ("gpu", 1, 60)
        return
    out = run_readme(shrink(args, tmp_path, tiny_mnist_root))
    assert out.returncode == 0, f"{command}\n{out.stderr[-2000:]}"
    if "hydra/launcher=joblib" in args:  # two workers on the cores, one torch thread each
        results = [json.loads(p.read_text()) for p in (tmp_path / "sweep").glob("*/metrics.json")]
        assert [r["status"] for r in results] == ["ok", "ok"]
        assert all(r["env"]["torch_threads"] == 1 for r in results)
    if args[:2] == ["-m", "tests.benchmark_images"]:
        names = ("ImageFolder, 0 workers", "ImageFolder, 2 workers", "expframe ", "hand-written")
        rows = out.stdout.splitlines()[2:6]
        assert all(row.startswith(name) for row, name in zip(rows, names, strict=True)), out.stdout
        assert re.search(r"later epochs: best ImageFolder / expframe = [\d.]+x", out.stdout)
        assert re.search(r"cache hit: [\d.]+ s", out.stdout)
    if args[:2] == ["-m", "tests.benchmark_data"]:
        assert re.search(r"warm decode cache, in process: [\d.]+ s", out.stdout), out.stdout
        rows = [line.split("|")[1].strip() for line in out.stdout.splitlines() if line.startswith("| ")][1:]
        assert rows == ["none", "basic", "randaugment", "trivialaugment", "mixup", "cutmix"], out.stdout


def test_readme_optuna_trials_command_reads_the_study(tmp_path):
    """The README's `optuna trials` line, as written, from the folder the search was started in."""
    search = next(c for c in COMMANDS if re.search(r"hparams_search=optuna_tpe(\s|$)", c))
    inspect = re.search(r"`(optuna trials [^`]*)`", README).group(1)
    args = [*shlex.split(search)[1:], "epochs=1", "hydra.sweeper.n_trials=2", "report.auto=false"]
    args[0] = str(ROOT / args[0])
    run = subprocess.run([sys.executable, *args], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    script, *rest = shlex.split(inspect)
    listing = subprocess.run(
        [str(Path(sys.executable).parent / script), *rest, "-f", "json"], cwd=tmp_path, capture_output=True, text=True
    )
    assert listing.returncode == 0, listing.stderr[-2000:]
    assert [t["state"] for t in json.loads(listing.stdout)] == ["COMPLETE", "COMPLETE"]


AXIS_JOBS = {
    "axis1_baseline": 1,
    "axis2_activations": 3,
    "axis3_optimizers": 4,
    "axis4_dropout": 4,
    "axis5_hparams": 36,
    "axis6_bn_init": 6,
}


@pytest.mark.parametrize("loop", LOOPS)
def test_readme_loop_runs_every_axis_preset(loop, tmp_path):
    """The loop as written: bash checks its syntax and expands its list, then each command, shrunk
    (1 epoch, one of its seeds, no report: the other sweep tests read reports) and pointed at its own
    folder, runs through the entry point in this process (six interpreters' start saved)."""
    assert subprocess.run(["bash", "-nc", loop]).returncode == 0
    var, words, template = re.fullmatch(r"for (\w+) in (.*?); do (.*); done", loop).groups()
    expand = f"for {var} in {words}; do echo ${var}; done"
    axes = subprocess.run(["bash", "-c", expand], capture_output=True, text=True).stdout.split()
    assert axes == list(AXIS_JOBS)
    for axis in axes:
        args = shlex.split(template.replace(f"${var}", axis))
        assert args[:2] == ["python", "train.py"], template
        extra = ["epochs=1", "seed=0", "report.auto=false", f"hydra.sweep.dir={tmp_path}/{axis}"]
        out = run_train_in_process(*args[2:], *extra)
        assert out.returncode == 0, f"{axis}: {out.stderr[-3000:]}"
    results = {a: [json.loads(p.read_text()) for p in (tmp_path / a).glob("*/metrics.json")] for a in AXIS_JOBS}
    assert {axis: len(runs) for axis, runs in results.items()} == AXIS_JOBS
    assert all(r["status"] == "ok" for runs in results.values() for r in runs)
    assert len({r["init_hash"] for r in results["axis3_optimizers"]}) == 1, "same initial weights for all"
    axis6 = results["axis6_bn_init"]
    zeros = [r for r in axis6 if r["swept"]["init"] == "zeros" and not r["swept"]["model.batchnorm"]]
    assert zeros[0]["val_acc"] < 0.2, "zero init on 3 hidden layers must not learn"


REPORTS = [line for line in LINES if line.startswith("expframe-report ")]


@pytest.mark.parametrize("command", REPORTS)
def test_readme_report_command_runs(command, grid_sweep):
    """The README's sweep path is an example; the command runs as written on a real sweep."""
    sweep_dir, _ = grid_sweep
    script, *args = shlex.split(command)
    args = [str(sweep_dir) if a.startswith("multirun/") else a for a in args]
    out = subprocess.run([str(Path(sys.executable).parent / script), *args], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "| activation" in out.stdout or "| optimizer" in out.stdout
    assert (sweep_dir / "summary.md").exists() and (sweep_dir / "summary.tex").exists()


EVALS = [line for line in LINES if line.startswith("expframe-eval ")]


def test_readme_shows_the_eval_command():
    assert EVALS


@pytest.mark.parametrize("command", EVALS)
def test_readme_eval_command_runs(command, tmp_path):
    """The README's run folder is an example; the command runs as written on a real run's folder."""
    run = run_train_in_process("dataset=digits", "epochs=1", f"hydra.run.dir={tmp_path / 'run'}")
    assert run.returncode == 0, run.stderr[-2000:]
    script, *args = shlex.split(command)
    args = [str(tmp_path / "run") if a.startswith("runs/") else a for a in args]
    out = subprocess.run([str(Path(sys.executable).parent / script), *args], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    recorded = json.loads((tmp_path / "run" / "metrics.json").read_text())["test_acc"]
    assert out.stdout.startswith(f"test_acc={recorded:.4f}") and "equal" in out.stdout


BOARDS = [line for line in LINES if line.startswith("tensorboard ")]


def hparams_table(port: int) -> list[dict]:
    """What TensorBoard's HParams tab shows: one session group per run, its hparams and final metrics."""
    query = {
        "experimentName": "",
        "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
        "colParams": [],
        "startIndex": 0,
        "sliceSize": 1000,
    }
    request = urllib.request.Request(
        f"http://localhost:{port}/data/plugin/hparams/session_groups",
        data=json.dumps(query).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as reply:
        return json.loads(reply.read())["sessionGroups"]


@pytest.mark.parametrize("command", BOARDS)
def test_readme_tensorboard_command_serves_the_runs(command, grid_sweep, tmp_path):
    """TensorBoard as written (on a real sweep), asked over HTTP which runs it shows."""
    sweep_dir, _ = grid_sweep
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    script, *args = shlex.split(command)
    args = [str(sweep_dir) if a.startswith("multirun/") else a for a in args]
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / script), *args, "--port", str(port)],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline, runs = time.time() + 90, None
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://localhost:{port}/data/runs", timeout=5) as reply:
                    runs = json.loads(reply.read())
                if runs or "runs" in args:
                    break
            except OSError:
                pass
            time.sleep(1)
        assert runs is not None, "TensorBoard did not answer"
        if "runs" not in args:
            jobs = sorted(p.name for p in sweep_dir.iterdir() if (p / ".hydra").is_dir())
            assert sorted(runs) == jobs
            groups = hparams_table(port)
            assert sorted(g["name"] for g in groups) == jobs, "the HParams table lists every job"
            for group in groups:
                metrics = json.loads((sweep_dir / group["name"] / "metrics.json").read_text())
                assert {k: group["hparams"][k] for k in ("optimizer", "activation")} == {
                    k: metrics["swept"][k] for k in ("optimizer", "activation")
                }
                values = {m["name"]["tag"]: m["value"] for m in group["metricValues"]}
                assert values["whole_run/val_acc"] == pytest.approx(metrics["val_acc"])
    finally:
        server.terminate()
        server.wait(timeout=30)
