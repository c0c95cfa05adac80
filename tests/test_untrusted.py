"""Run folders and overrides are untrusted input (issue 28): no code from a run folder, no write
outside the run or sweep folder, every bad value one line naming its key, before anything runs."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from expframe import EXECUTION_WHITELIST
from expframe.record import folder_lock
from tests.conftest import CONF, ROOT, run_cli_in_process, run_like_hydra, run_train_in_process

QUICK = ["dataset=digits", "epochs=1", "energy.track=false", "logging.tensorboard=false"]

# (overrides, words the one line must hold: the key first). {tmp} is the test's own folder; every case
# runs with hydra.run.dir / hydra.sweep.dir under it (unless the case sets them) and must create nothing.
BAD = [
    # keys nobody has: +key and ++key, top level and in groups
    (["+optimzer=adam"], ["optimzer", "optimizer=adam"]),
    (["++epoch=3"], ["epoch=3", "epochs"]),
    (["+early_stopping.patiense=3"], ["early_stopping.patiense", "early_stopping.patience"]),
    (["+dataset.val_fracton=0.5"], ["dataset.val_fracton", "dataset.val_fraction"]),
    (["++checkpoint.evry=2"], ["checkpoint.evry", "checkpoint.every"]),
    (["+logging.tensorbord=false"], ["logging.tensorbord", "logging.tensorboard"]),
    (["+energy.trak=false"], ["energy.trak", "energy.track"]),
    (["++cv.fold=3"], ["cv.fold", "cv.folds"]),
    (["+seeds=3"], ["seeds", "seed"]),
    (["++report.autom=false"], ["report.autom", "report.auto"]),
    (["+device.thread=1"], ["device.thread", "device.threads"]),
    (["-m", "seed=0,1", "+optimzer=adam"], ["optimzer"]),
    # targets the project does not declare, on the command line
    (["dataset.source._target_=expframe.record.atomic.write_atomic"], ["dataset.source._target_", "write_atomic"]),
    (["model._target_=tests.support.local_cluster.start_slurm"], ["model._target_", "start_slurm"]),
    (["optimizer._target_=os.system"], ["optimizer._target_", "os.system"]),
    # output folders and names
    (["hydra.run.dir="], ["hydra.run.dir", "must name a folder"]),
    (["hydra.run.dir=."], ["hydra.run.dir", "current folder"]),
    (["hydra.run.dir=.."], ["hydra.run.dir", "above the current folder"]),
    (["hydra.run.dir={tmp}/" + "n" * 300], ["hydra.run.dir", "300 bytes"]),
    (["hydra.run.dir={tmp}/a_file/run"], ["hydra.run.dir", "is a file"]),
    (["hydra.job.name=../../x"], ["hydra.job.name", "not a path"]),
    (["hydra.job.name="], ["hydra.job.name", "non-empty"]),
    (["-m", "seed=0,1", "hydra.sweep.dir="], ["hydra.sweep.dir", "must name a folder"]),
    (["-m", "seed=0,1", "hydra.sweep.dir=."], ["hydra.sweep.dir", "current folder"]),
    (["-m", "seed=0,1", "hydra.sweep.subdir=../x"], ["hydra.sweep.subdir", "inside the sweep folder"]),
    (["-m", "seed=0,1", "hydra.job.name=a/b"], ["hydra.job.name", "not a path"]),
    # sweeper and launcher settings, search spaces, empty sweeps
    (["-m", "hparams_search=optuna_tpe", "hydra.sweeper.n_trials=0"], ["hydra.sweeper.n_trials=0", ">= 1"]),
    (["-m", "hparams_search=optuna_tpe", "hydra.sweeper.n_trials=-3"], ["hydra.sweeper.n_trials=-3", ">= 1"]),
    (["-m", "hparams_search=optuna_tpe", "hydra.sweeper.n_jobs=0"], ["hydra.sweeper.n_jobs=0", ">= 1"]),
    (["-m", "hparams_search=optuna_tpe", "hydra.sweeper.direction=sideways"], ["hydra.sweeper.direction", "sideways"]),
    (["-m", "hparams_search=optuna_tpe", "hydra.sweeper.study_name=../../x"], ["hydra.sweeper.study_name", "path"]),
    (["-m", "hparams_search=optuna_tpe", "hydra.sweeper.study_name="], ["hydra.sweeper.study_name", "non-empty"]),
    (["-m", "hparams_search=optuna_tpe", "hydra.sweeper.study_name=a\\\\b"], ["hydra.sweeper.study_name"]),
    (["-m", "hparams_search=optuna_pareto", "objective=val_acc"], ["hydra.sweeper.direction", "2 direction(s)"]),
    (["-m", "hparams_search=optuna_tpe", "optimizer.lr=interval(-1,-0.5)"], ["optimizer.lr", "> 0"]),
    (["-m", "hparams_search=optuna_tpe", "model.dropout=interval(0.2,1.5)"], ["model.dropout", "[0, 1)"]),
    (["-m", "hparams_search=optuna_tpe", "optimizer.lr=interval(0.1,0.01)"], ["optimizer.lr", "low < high"]),
    (["-m", "hparams_search=optuna_tpe", "model.depth=choice(1,-2)"], ["model.depth=-2", ">= 0"]),
    (["-m", "hparams_search=optuna_tpe", "optimizer=choice(sgd,adamx)"], ["optimizer", "adamx"]),
    (["-m", "hparams_search=optuna_tpe", "model.width=range(0,3)"], ["model.width=0", ">= 1"]),
    (["-m", "seed=0,1", "hydra.sweeper.max_batch_size=0"], ["hydra.sweeper.max_batch_size=0", ">= 1"]),
    (["cv.folds=3", "cv.pruner=abc"], ["cv.pruner", "optuna.pruners"]),
    (["device.type=tpu"], ["device.type", "auto, cpu or cuda"]),
    (["objective=[]"], ["objective", "at least one"]),
    (["-m", "seed=range(0,0)"], ["seed", "no value"]),
    (["-m", "epochs=range(5,1)"], ["epochs", "no value"]),
    (["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=0", "seed=0,1"], ["hydra.launcher.n_jobs=0", ">= 1"]),
    (["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=-99", "seed=0,1"], ["hydra.launcher.n_jobs=-99"]),
    (
        ["-m", "hparams_search=optuna_tpe", "hydra.sweeper.storage=sqlite:///{tmp}/a_file/x.db"],
        ["hydra.sweeper.storage", "cannot be created"],
    ),
    (
        [
            "-m",
            "hparams_search=optuna_tpe",
            "hydra.sweeper.n_trials=1",
            "hydra.sweeper.storage=postgresql+psycopg://u:s3/cr t@127.0.0.1:1/db",
        ],
        ["hydra.sweeper.storage", "u:***@127.0.0.1:1", "127.0.0.1:1"],
    ),
    # well typed, absurd
    (["device.threads=999"], ["device.threads=999", "CPUs"]),
    (["model.width=100000000"], ["model", "weights alone", "GiB"]),
    (["model=cnn", "model.channels=[100000,100000]", "model.depth=3"], ["model", "weights alone"]),
    (["optimizer.lr=1e300"], ["optimizer.lr", "3.4e38"]),
    (["optimizer.lr=1e39"], ["optimizer.lr", "3.4e38"]),
    (["dataset.val_fraction=1e-7"], ["dataset.val_fraction", "at least 5"]),
    (["dataset.val_fraction=0.001"], ["dataset.val_fraction", "at least 5"]),
    # bad image folders
    (["dataset=image_folder", "dataset.root={tmp}/no_such_images"], ["dataset.root", "not a folder"]),
    (["dataset=image_folder", "dataset.max_pixels=0"], ["dataset.max_pixels=0", ">= 1"]),
    (["dataset=image_folder", "dataset.max_pixels=many"], ["dataset.max_pixels", "integer"]),
    # resume and finished folders
    (["resume={tmp}/no_such_run"], ["resume", "no_such_run", "not a folder"]),
    (["resume={tmp}/finished_sweep"], ["resume", "not a run folder"]),
    (["hydra.run.dir={tmp}/finished"], ["hydra.run.dir", "already holds a run", "resume="]),
    (
        ["-m", "hparams_search=optuna_tpe", "hydra.sweep.dir={tmp}/finished_sweep"],
        ["hydra.sweep.dir", "already holds a sweep", "resumes through its storage"],
    ),
    (["-m", "seed=0,1", "sweep.rerun_changed=maybe"], ["sweep.rerun_changed='maybe'", "true or false"]),
    (["hydra.run.dir=conf"], ["hydra.run.dir", "holds other files"]),
    (["-m", "seed=0,1", "hydra.sweep.dir=expframe"], ["hydra.sweep.dir", "holds other files"]),
    # Hydra's own files stay in the job folder
    (["hydra.output_subdir=../x"], ["hydra.output_subdir", "not a path"]),
    (["hydra.job_logging.handlers.file.filename={tmp}/evil.log"], ["hydra.job_logging.handlers.file.filename"]),
    (["hydra.run.dir={tmp}/a/../../../../../.."], ["hydra.run.dir", "above the current folder"]),
    # more sweeper settings and sizes
    (["-m", "hparams_search=optuna_tpe", "hydra.sweeper.max_failure_rate=2"], ["hydra.sweeper.max_failure_rate=2"]),
    (["-m", "hparams_search=optuna_tpe", "hydra.sweeper.sampler.seed=-1"], ["hydra.sweeper.sampler.seed=-1"]),
    (["dataset=synthetic", "dataset.source.n_train=1000000000"], ["dataset.source.n_train", "GiB"]),
    (["dataset.source.test_size=100000"], ["dataset.source.test_size", "at most"]),
    (["energy.tracking_mode=everything"], ["energy.tracking_mode", "machine"]),
    (["energy.country_iso_code=france"], ["energy.country_iso_code", "3-letter"]),
    # the shift evaluation: names, severities, and corruptions the data cannot take
    (["shift=standard", "shift.corruptions=[gaussian_noise,frost]"], ["shift.corruptions='frost'", "gaussian_noise"]),
    (["shift=noise", "shift.severities=[0,3]"], ["shift.severities=0", "1-5"]),
    (["shift=noise", "shift.severities=[6]"], ["shift.severities=6", "1-5"]),
    (["shift=noise", "shift.severities=[high]"], ["shift.severities='high'", "1-5"]),
    (["shift=digital", "shift.corruptions=[contrast,saturate]"], ["shift.corruptions='saturate'", "3-channel", "1"]),
    (["shift=blur", "dataset=synthetic"], ["shift='blur'", "synthetic"]),
    (["shift=fancy"], ["shift", "fancy"]),
    # a retraining: its settings, and the parent folder it starts from (checked before any data)
    (["retrain.from={tmp}/finished", "retrain.new=test", "retrain.mix=1.5"], ["retrain.mix=1.5", "[0, 1]"]),
    (["retrain.from={tmp}/finished", "retrain.new=test", "retrain.mix=half"], ["retrain.mix='half'", "[0, 1]"]),
    (["retrain.from={tmp}/finished", "retrain.new=test", "retrain.holdout=1"], ["retrain.holdout=1", "(0, 1)"]),
    (["retrain.from={tmp}/a_file", "retrain.new=test"], ["retrain.from", "not a folder"]),
    (["retrain.from='{tmp}/finished_sweep/0_seed=0'", "retrain.new=test"], ["retrain.from", "model.pt"]),
    (["retrain.new=test"], ["retrain.new='test'", "needs retrain.from"]),
    (["retrain.from={tmp}/finished"], ["retrain.new=null", "test, val"]),
    (["retrain.from={tmp}/finished", "retrain.new=test+fog:9"], ["retrain.new='test+fog:9'", "SEVERITY 1-5"]),
    (["retrain.from={tmp}/finished", "retrain.new={tmp}/nowhere"], ["retrain.new", "image folder"]),
    (["retrain.from={tmp}/finished", "retrain.new=test", "model.width=7"], ["retrain.from", "model.width=", "7"]),
    # the ViT family on 8x8 digits: what it cannot be
    (["model=vit", "model.batchnorm=true"], ["model.batchnorm=true", "LayerNorm"]),
    (["model=vit", "model.patch_size=3"], ["model.patch_size=3", "divide the image side 8"]),
    (["model=vit", "model.patch_size=4", "model.heads=3"], ["model.heads=3", "model.width=64"]),
    (["model=vit", "model.patch_size=4", "model.weights={tmp}/a_file"], ["model.weights", "cannot be read"]),
    # values of the older table's kinds, through the same path
    (["optimizer.lr=-1"], ["optimizer.lr", "> 0"]),
    (["epochs=0"], ["epochs", ">= 1"]),
    (["+loss.weight=[1,2]"], ["loss.weight", "10"]),
]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished single run and a finished sweep's job folder, to be refused as outputs."""
    base = tmp_path_factory.mktemp("finished")
    run = base / "finished"
    run.mkdir()
    run_like_hydra(run, *QUICK)
    job = base / "finished_sweep" / "0_seed=0"
    job.mkdir(parents=True)
    (job / ".hydra").mkdir()
    (base / "a_file").write_text("a file, not a folder\n")
    return base


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


@pytest.mark.parametrize("args, words", BAD, ids=[" ".join(a)[:60] for a, _ in BAD])
def test_a_bad_input_is_one_line_naming_its_key_and_writes_nothing(finished, tmp_path, args, words):
    tmp = finished
    args = [a.replace("{tmp}", str(tmp)) for a in args]
    words = [w.replace("{tmp}", str(tmp)) for w in words]
    sweep = "-m" in args
    key = "hydra.sweep.dir" if sweep else "hydra.run.dir"
    outputs = [] if any(a.startswith(f"{key}=") for a in args) else [f"{key}={tmp_path}/out"]
    before_project = set(os.listdir(ROOT))
    before = snapshot(tmp)
    code, err = run_cli_in_process(*QUICK, *args, *outputs)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code != 0, f"accepted: {args}"
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    for word in words:
        assert word in lines[0], (word, lines[0])
    if (tmp_path / "out").exists():  # refused once the data were loaded: only the failure's record
        assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".hydra", "metrics.json", "train.log"]
        record = json.loads((tmp_path / "out" / "metrics.json").read_text())
        assert record["status"] == "failed" and words[0] in record["error"] and record["model_file"] is None
    assert snapshot(tmp) == before, "a refused input changed files that were there"
    assert set(os.listdir(ROOT)) == before_project, "a refused input wrote into the project folder"


def test_the_table_holds_sixty_cases_of_every_kind():
    assert len(BAD) >= 60


def test_valid_inputs_near_the_refused_ones_train(tmp_path):
    """A documented key (`loss.weight`), a label under notes, `++` of a known key, a link inside the folder."""
    out = run_train_in_process(
        *QUICK,
        "+loss.weight=[1,1,1,1,1,1,1,1,1,1]",
        "+notes.who=alice",
        "++epochs=1",
        "+optimizer.nesterov=false",
        f"hydra.run.dir={tmp_path}/run",
    )
    assert out.returncode == 0, out.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["swept"]["notes.who"] == "alice"
    plain = run_train_in_process(*QUICK, f"hydra.run.dir={tmp_path}/plain")
    assert plain.returncode == 0, plain.stderr
    reference = json.loads((tmp_path / "plain" / "metrics.json").read_text())
    assert (metrics["val_acc"], metrics["test_acc"]) == (reference["val_acc"], reference["test_acc"]), (
        "a label, equal weights and defaults spelled out change nothing"
    )


def test_the_allow_list_names_exactly_the_expframe_targets_conf_declares():
    declared = set()
    for path in CONF.rglob("*.yaml"):
        text = path.read_text()
        declared |= {
            line.split(":", 1)[1].strip() for line in text.splitlines() if line.strip().startswith("_target_:")
        }
    ours = {t for t in declared if t.startswith("expframe.")}
    listed = {t for t in EXECUTION_WHITELIST if t.startswith("expframe.")}
    from hydra.utils import get_object

    defined_at = {f"{get_object(t).__module__}.{get_object(t).__qualname__}" for t in ours}
    assert listed == ours | defined_at, "every expframe target in conf/ is listed, and nothing else of expframe"
    assert not any(t.endswith("*") for t in listed)


# --- a run folder is data --------------------------------------------------------------------------

HOSTILE = {
    # a process starter and a file writer, both importable from the installed package
    "process": lambda marker: {
        "_target_": "tests.support.local_cluster._spawn",
        "cluster": None,
        "cmd": ["touch", str(marker)],
        "log": str(marker) + ".log",
    },
    "file": lambda marker: {"_target_": "expframe.record.atomic.write_atomic", "path": str(marker), "data": "pwned"},
    "os": lambda marker: {"_target_": "os.system", "_args_": [f"touch {marker}"]},
}


@pytest.fixture(scope="module")
def shared_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("shared") / "run"
    run.mkdir()
    run_like_hydra(run, *QUICK)
    return run


def hostile_copy(shared_run: Path, folder: Path, where: str, kind: str, with_choices: bool) -> Path:
    import shutil

    run = folder / f"{kind}-{where.replace('.', '_')}"
    shutil.copytree(shared_run, run)
    config = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
    node = config
    *parents, last = where.split(".")
    for part in parents:
        node = node[part]
    node[last] = HOSTILE[kind](folder / "marker")
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    if with_choices:
        choices = {
            "dataset": "digits",
            "model": "mlp",
            "activation": "relu",
            "init": "default",
            "loss": "cross_entropy",
        }
        (run / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"runtime": {"choices": choices}}}))
    return run


@pytest.mark.parametrize("command", ["expframe-eval", "expframe-deploy"])
@pytest.mark.parametrize("kind", list(HOSTILE))
@pytest.mark.parametrize(
    "where", ["dataset.source", "model", "activation", "init.weight", "loss", "dataset.source.extra"]
)
def test_a_run_folder_naming_code_is_refused_in_one_line_and_runs_nothing(
    shared_run, tmp_path, capsys, command, kind, where
):
    from expframe.cli.deploy import main as deploy_main
    from expframe.cli.rescore import main as eval_main

    run = hostile_copy(shared_run, tmp_path, where, kind, with_choices=where != "model")
    before = snapshot(run)
    with pytest.raises(SystemExit) as stop:
        (eval_main if command == "expframe-eval" else deploy_main)([str(run)])
    line = str(stop.value.code)
    assert line.startswith("error: ") and "\n" not in line, line
    target = HOSTILE[kind](tmp_path / "marker")["_target_"]
    assert f"{where}._target_" in line and target in line, line
    assert not (tmp_path / "marker").exists() and not (tmp_path / "marker.log").exists(), "code from the folder ran"
    assert snapshot(run) == before, "the refused folder was written to"


def test_eval_and_report_read_an_untouched_shared_folder(shared_run, capsys):
    from expframe.cli.rescore import main as eval_main

    eval_main([str(shared_run)])
    assert "equal" in capsys.readouterr().out


def edit_config(change):
    def damage(run: Path) -> None:
        config = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
        change(config)
        (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))

    return damage


@pytest.mark.parametrize(
    "damage, words",
    [
        (lambda run: (run / "model.pt").write_bytes(b"\x80\x04crafted"), ["model.pt", "unreadable"]),
        (lambda run: (run / ".hydra" / "config.yaml").write_text("a: [unclosed\n"), ["config.yaml", "unreadable"]),
        (lambda run: (run / ".hydra" / "config.yaml").write_text("- a list\n"), ["config.yaml", "not a mapping"]),
        (lambda run: (run / "metrics.json").write_text("{not json"), ["metrics.json", "unreadable"]),
        (lambda run: (run / ".hydra" / "hydra.yaml").write_text("hydra: [1"), ["hydra.yaml", "unreadable"]),
        (edit_config(lambda c: c["model"].update(width=10**9)), ["its config has model=", "weights alone"]),
        (edit_config(lambda c: c["model"].update(width="abc")), ["its config has model.width='abc'", "integer"]),
        (edit_config(lambda c: c.pop("model")), ["its config is incomplete", "model"]),
        (edit_config(lambda c: c.update(model="abc")), ["its config is incomplete"]),
        (edit_config(lambda c: c["precision"].update(autocast_dtype="os")), ["precision.autocast_dtype='os'"]),
        (edit_config(lambda c: c.update(activation={"inplace": True})), ["RUN_DIR"]),
        (
            lambda run: (run / ".hydra" / "config.yaml").write_text("a: !!python/object/apply:os.system ['true']\n"),
            ["config.yaml", "unreadable", "ConstructorError"],
        ),
    ],
    ids=[
        "crafted-model.pt",
        "corrupt-config",
        "config-a-list",
        "corrupt-metrics",
        "corrupt-hydra.yaml",
        "huge-width",
        "width-a-string",
        "no-model",
        "model-a-string",
        "dtype-a-module",
        "activation-without-target",
        "python-tag",
    ],
)
def test_a_damaged_run_folder_is_one_line_for_eval(shared_run, tmp_path, damage, words):
    import shutil

    from expframe.cli.rescore import main as eval_main

    run = tmp_path / "run"
    shutil.copytree(shared_run, run)
    damage(run)
    with pytest.raises(SystemExit) as stop:
        eval_main([str(run)])
    line = str(stop.value.code)
    assert line.startswith("error: RUN_DIR=") and "\n" not in line and all(w in line for w in words), line


def test_resume_from_a_checkpoint_whose_config_names_code_is_refused(tmp_path):
    """last.ckpt's saved config is only compared, never built: another target is a differing key."""
    import torch

    from expframe.train import checkpoint

    run = tmp_path / "run"
    out = run_train_in_process(*QUICK, "epochs=1", "checkpoint.every=1", f"hydra.run.dir={run}")
    assert out.returncode == 0, out.stderr
    state = torch.load(run / "last.ckpt", weights_only=True)
    state["config"]["dataset"]["source"] = HOSTILE["file"](tmp_path / "marker")
    checkpoint.save(run / "last.ckpt", {k: v for k, v in state.items() if k != "format"})
    code, err = run_cli_in_process(*QUICK, "epochs=2", f"resume={run}")
    assert code == 1 and err.strip().startswith("error: resume=") and "dataset.source" in err, err
    assert not (tmp_path / "marker").exists()


def test_a_corrupt_config_in_a_sweep_is_named_and_its_run_left_out(tmp_path, caplog):
    from expframe.report.summary import report

    for seed in (0, 1):
        job = tmp_path / f"{seed}_seed={seed}"
        job.mkdir()
        run_like_hydra(job, *QUICK, f"seed={seed}")
    broken = tmp_path / "1_seed=1" / ".hydra" / "config.yaml"
    broken.write_text("dataset: {name: [unclosed\n")
    with caplog.at_level("WARNING", logger="expframe"):
        report([tmp_path], tmp_path / "out", plots=False)
    assert any(str(broken) in r.getMessage() and "corrupt YAML" in r.getMessage() for r in caplog.records)
    rows = (tmp_path / "out" / "summary.csv").read_text().splitlines()
    assert len(rows) == 2 and "0_seed=0" in rows[1], "the unreadable run is left out, the other reported"


# --- writes stay inside their folders -----------------------------------------------------------------


def test_override_values_with_paths_keep_every_job_inside_the_sweep(tmp_path):
    sweep = tmp_path / "deep" / "sweep"
    out = run_train_in_process(
        "-m", *QUICK, "+notes.where=../../../escaped,a/b,..", "report.auto=false", f"hydra.sweep.dir={sweep}"
    )
    assert out.returncode == 0, out.stderr
    jobs = sorted(p for p in sweep.iterdir() if (p / ".hydra").is_dir())
    assert len(jobs) == 3 and all((j / "metrics.json").is_file() for j in jobs), jobs
    assert all("/" not in j.name and ".." not in j.name for j in jobs), [j.name for j in jobs]
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_dir() and "escaped" in p.name) == [
        next(j.name for j in jobs if "escaped" in j.name)
    ]
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "deep" / "escaped").exists()


def test_a_finished_run_is_never_overwritten_and_resume_is_named(finished):
    run = finished / "finished"
    before = snapshot(run)
    code, err = run_cli_in_process(*QUICK, f"hydra.run.dir={run}")
    assert code == 1 and f"resume={run}" in err
    assert snapshot(run) == before


def test_a_run_folder_a_live_process_writes_is_refused(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        start = folder_lock.process_start(holder.pid)
        lock = {"host": os.uname().nodename, "pid": holder.pid, "start": start}
        (run / folder_lock.LOCK_FILE).write_text(json.dumps(lock))
        code, err = run_cli_in_process(*QUICK, f"hydra.run.dir={run}")
        assert code == 1 and f"is being written by process {holder.pid}" in err, err
        assert sorted(p.name for p in run.iterdir()) == [folder_lock.LOCK_FILE]
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_left_by_a_dead_process_is_taken_over_and_said_so(tmp_path, caplog):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "pass"])
    start = folder_lock.process_start(holder.pid)
    holder.wait()
    lock = {"host": os.uname().nodename, "pid": holder.pid, "start": start}
    (sweep / folder_lock.LOCK_FILE).write_text(json.dumps(lock))
    with caplog.at_level("WARNING", logger="expframe"):
        folder_lock.acquire(sweep, "hydra.sweep.dir")
    assert any("took over the lock" in r.getMessage() and str(holder.pid) in r.getMessage() for r in caplog.records)
    assert json.loads((sweep / folder_lock.LOCK_FILE).read_text())["pid"] == os.getpid()
    folder_lock.release(sweep)
    assert not (sweep / folder_lock.LOCK_FILE).exists()


@pytest.mark.slow
def test_two_sweeps_started_at_once_into_one_folder_train_each_job_once(tmp_path):
    """Real processes: each job is claimed by one of them (expframe.sweep.claims); none is trained
    twice, and no job folder gets two writers."""
    sweep = tmp_path / "sweep"
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    args = [sys.executable, "train.py", "-m", *QUICK, "seed=0,1", "report.auto=false", f"hydra.sweep.dir={sweep}"]
    both = [subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
    both.append(subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=180) for p in both]
    assert [p.returncode for p in both] == [0, 0], [err[-2000:] for _, err in outs]
    trained = [line for out, err in outs for line in (out + err).splitlines() if "] - ok: " in line]
    metrics = [json.loads(p.read_text()) for p in sweep.glob("*/metrics.json")]
    assert len(trained) == 2 and len(metrics) == 2 and all(m["status"] == "ok" for m in metrics), trained
    assert not (sweep / folder_lock.LOCK_FILE).exists(), "a sweep folder is not locked: its jobs are claimed"


# --- faults -------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_sigterm_is_recorded_like_ctrl_c_through_the_real_process(tmp_path):
    run = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    args = ["dataset=mnist_5k", "epochs=200", "energy.track=false", "logging.tensorboard=false"]
    proc = subprocess.Popen(
        [sys.executable, "train.py", *args, f"hydra.run.dir={run}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        history = run / "history.csv"
        if history.exists() and len(history.read_text().splitlines()) >= 2:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err[-2000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "interrupted" and metrics["epochs_run"] >= 1
    assert "terminated (SIGTERM)" in out + err
    assert not (run / folder_lock.LOCK_FILE).exists()


FILE_SIZE_LIMIT = """
import resource, runpy, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), int(sys.argv[1])))
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.slow
def test_a_disk_that_fills_mid_run_is_one_line_and_an_honest_record(tmp_path):
    """RLIMIT_FSIZE makes the kernel refuse writes past a size (EFBIG), as a full disk refuses them
    (ENOSPC): the run and the report each end in one line, metrics.json says failed."""
    run = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    limited = [sys.executable, "-c", FILE_SIZE_LIMIT, "20000"]
    done = subprocess.run(
        [*limited, "train.py", "dataset=digits", "epochs=2", "energy.track=false", f"hydra.run.dir={run}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: cannot write"), done.stderr[-2000:]
    assert json.loads((run / "metrics.json").read_text())["status"] == "failed"
    sweep = tmp_path / "sweep"
    (sweep / "0_seed=0").mkdir(parents=True)
    run_like_hydra(sweep / "0_seed=0", *QUICK)
    entry = tmp_path / "report_entry.py"
    entry.write_text("from expframe.cli.report import main\nmain()\n")
    done = subprocess.run(
        [*limited[:3], "100", str(entry), str(sweep), "--no-figures"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and lines[-1].startswith(f"error: --out {sweep}: cannot write"), done.stderr[-2000:]
    assert not (sweep / "summary.md").exists()


# --- image folders ----------------------------------------------------------------------------------


def crafted_png(width: int, height: int) -> bytes:
    """A valid PNG header claiming width x height pixels, with almost no data (274 bytes in the issue)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


@pytest.fixture
def hostile_images(tiny_image_roots, tmp_path) -> Path:
    import shutil

    root = tmp_path / "xray"
    shutil.copytree(tiny_image_roots["xray"], root)
    (root / "train" / "NORMAL" / "bomb.png").write_bytes(crafted_png(100_000, 100_000))
    (root / "train" / "NORMAL" / "big.png").write_bytes(crafted_png(9_000, 9_000))
    secret = tmp_path / "outside.png"
    shutil.copy(next((root / "test" / "NORMAL").glob("*.png")), secret)
    (root / "train" / "PNEUMONIA" / "link.png").symlink_to(secret)
    (root / "train" / "PNEUMONIA" / "inside.png").symlink_to(next((root / "train" / "PNEUMONIA").glob("1*.png")))
    return root


def test_crafted_headers_and_outside_links_are_skipped_with_warnings(hostile_images, tmp_path, caplog):
    from expframe.data.image_folder import image_folder

    with caplog.at_level("WARNING", logger="expframe"):
        splits = image_folder(str(hostile_images), 28, 1, cache_dir=str(tmp_path / "cache"))
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "bomb.png" in messages
    assert "big.png (too large: 9000 x 9000 pixels, over dataset.max_pixels=50,000,000)" in messages
    assert "link.png" in messages and "outside dataset.root" in messages
    assert "inside.png" not in messages, "a link inside the folder is an ordinary file"
    assert len(splits.train_y) == 40 + 10 + 1, "every real image and the inside link, nothing else"


def test_linked_folders_that_lead_outside_are_not_read(tiny_image_roots, tmp_path, caplog):
    """A link to a folder below a class folder is not descended into; a class folder that is a link
    out of dataset.root is skipped with the warning a linked file gets."""
    import shutil

    from expframe.data.image_folder import image_folder
    from expframe.errors import ConfigError

    root = tmp_path / "xray"
    shutil.copytree(tiny_image_roots["xray"], root)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(next((root / "test" / "NORMAL").glob("*.png")), elsewhere / "stolen.png")
    (root / "train" / "NORMAL" / "more").symlink_to(elsewhere)
    shutil.move(root / "test" / "PNEUMONIA", tmp_path / "PNEUMONIA")
    (root / "test" / "PNEUMONIA").symlink_to(tmp_path / "PNEUMONIA")
    with caplog.at_level("WARNING", logger="expframe"), pytest.raises(ConfigError, match="empty class folder"):
        image_folder(str(root), 28, 1, cache_dir=str(tmp_path / "cache"))
    assert "outside dataset.root" in " ".join(r.getMessage() for r in caplog.records)
    (root / "test" / "PNEUMONIA").unlink()
    shutil.move(tmp_path / "PNEUMONIA", root / "test" / "PNEUMONIA")
    splits = image_folder(str(root), 28, 1, cache_dir=str(tmp_path / "cache"))
    assert all("stolen" not in f and "more" not in f for f in splits.files.train_files)
    assert len(splits.train_y) == 50


def test_strict_refuses_them_in_one_line_before_training(hostile_images, tmp_path):
    (hostile_images / "train" / "PNEUMONIA" / "link.png").unlink()
    for extra, word in ((["dataset.max_pixels=100000000000"], "bomb.png"), ([], "big.png")):
        if word == "big.png":
            (hostile_images / "train" / "NORMAL" / "bomb.png").unlink()
        code, err = run_cli_in_process(
            "dataset=image_folder",
            f"dataset.root={hostile_images}",
            "dataset.image_size=28",
            "dataset.strict=true",
            f"dataset.cache_dir={tmp_path}/cache",
            "epochs=1",
            "energy.track=false",
            f"hydra.run.dir={tmp_path}/run",
            *extra,
        )
        lines = err.strip().splitlines()
        assert code == 1 and lines[-1].startswith("error: dataset.strict=true") and word in lines[-1], err
        assert not (tmp_path / "run").exists(), "refused before the run folder exists"
    (hostile_images / "train" / "PNEUMONIA" / "link.png").symlink_to(tmp_path / "outside.png")
    code, err = run_cli_in_process(
        "dataset=image_folder", f"dataset.root={hostile_images}", "dataset.strict=true", f"hydra.run.dir={tmp_path}/run"
    )
    assert code == 1 and "link.png links outside dataset.root" in err and not (tmp_path / "run").exists(), err


# --- figures and records ------------------------------------------------------------------------------


def test_a_cross_validated_job_with_one_contended_fold_sums_up(tmp_path):
    from expframe.record import catalogue as figures
    from expframe.sweep.cv import aggregate

    folds = []
    for i, (contended, load) in enumerate(((False, None), (True, 0.7), (False, 0.1))):
        metrics = json.loads(json.dumps(figures.empty_summary()))
        metrics.update(status="ok", seed=0, machine_busy=contended, speed_unreliable=contended, energy_unreliable=False)
        metrics.update(other_cpu_load=load, val_acc=0.5 + i / 10)
        folds.append(metrics)
    job = aggregate(folds, 3)
    assert job["machine_busy"] is True and job["speed_unreliable"] is True and job["other_cpu_load"] == 0.7
    assert job["energy_unreliable"] is False
    assert "note: machine busy (other processes used 70% of the CPUs)" in figures.summary_line(job)
    folds[1]["other_cpu_load"] = None
    line = figures.summary_line({**aggregate(folds, 3), "other_cpu_load": None})
    assert "note: machine busy warning: speed figures unreliable" in line


def test_passwords_are_masked_in_every_form():
    from expframe.record.redact import masked

    for password in ("s3/cr t", "a%2Fb%20c", "plain", "p:a:ss", "tab\tin"):
        url = f"postgresql+psycopg://alice:{password}@db.example:5432/study"
        text = f"storage: '{url}'\nStorage: {url} and more"
        assert password not in masked(text) and masked(text).count("alice:***@db.example:5432") == 2
    assert masked("sqlite:////tmp/x/y.db") == "sqlite:////tmp/x/y.db"


@pytest.mark.parametrize(
    "key, value, words",
    [
        ("epoch", "choice(1, 2)", ["hydra.sweeper.params.epoch", "epochs"]),
        ("model.widht", "choice(8, 16)", ["model.widht", "not a parameter", "width"]),
        ("optimizer", "choice(sgd, adamx)", ["optimizer", "adamx"]),
        ("optimizer.lr", "interval(0.1, 0.01)", ["optimizer.lr", "low < high"]),
    ],
)
def test_a_search_space_in_a_preset_file_is_checked_like_the_command_line(key, value, words):
    """A student's own conf/hparams_search/*.yaml: its params are checked before the first trial."""
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from expframe.errors import ConfigError
    from expframe.sweep.checks import check_sweep_values

    with initialize_config_dir(config_dir=str(CONF)):
        cfg = compose("train", ["hparams_search=optuna_tpe", *QUICK], return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.sweeper.params[key] = value
    with pytest.raises(ConfigError) as refused:
        check_sweep_values(cfg)
    assert all(w in str(refused.value) for w in words), str(refused.value)


@pytest.mark.parametrize(
    "command, args, words",
    [
        ("report", ["{sweep}", "--resolve", "-1"], ["--resolve", "> 0"]),
        ("report", ["{sweep}", "--resolve", "abc"], ["--resolve", "'abc'"]),
        ("report", [], ["required: paths"]),
        ("report", ["{sweep}", "--baseline", "nokey=1"], ["--baseline nokey=1", "not a config key"]),
        ("report", ["{sweep}", "--baseline", "seed=7"], ["--baseline seed=7", "no run has it"]),
        ("report", ["{sweep}", "--out", "{sweep}/0_seed=0/metrics.json"], ["--out", "is a file"]),
        ("report", ["{sweep}", "--out", "{sweep}/" + "o" * 300], ["--out", "300 bytes"]),
        ("eval", ["{sweep}/0_seed=0", "--device", "tpu"], ["--device", "tpu"]),
        ("eval", ["{sweep}"], ["RUN_DIR", "not a run folder"]),
        ("eval", ["{sweep}/nothing"], ["RUN_DIR", "not a folder"]),
        ("deploy", ["{sweep}/0_seed=0", "--variants", "fp64"], ["deploy.variants", "fp64"]),
        ("deploy", ["{sweep}/nothing"], ["RUN_DIR", "not a folder"]),
        ("monitor", ["{sweep}/nothing", "--data", "test"], ["RUN_DIR", "not a folder"]),
        ("monitor", ["{sweep}", "--data", "test"], ["RUN_DIR", "not a run folder"]),
        ("monitor", ["{sweep}/0_seed=0", "--data", "train"], ["--data='train'", "test, val"]),
        ("monitor", ["{sweep}/0_seed=0", "--data", "test", "--window", "100000"], ["--window=100000", "at most"]),
        ("monitor", ["{sweep}/0_seed=0", "--data", "test", "--detectors", "auc"], ["--detectors='auc'", "ks, mmd"]),
        ("monitor", ["{sweep}/0_seed=0", "--data", "test", "--on-drift", "page"], ["--on-drift", "'page'"]),
    ],
)
def test_the_other_commands_refuse_bad_arguments_in_one_line_and_write_nothing(
    finished_sweep, command, args, words, capsys
):
    from expframe.cli.deploy import main as deploy_main
    from expframe.cli.monitor import main as monitor_main
    from expframe.cli.report import main as report_main
    from expframe.cli.rescore import main as eval_main

    main = {"report": report_main, "eval": eval_main, "deploy": deploy_main, "monitor": monitor_main}[command]
    args = [a.replace("{sweep}", str(finished_sweep)) for a in args]
    before = snapshot(finished_sweep)
    with pytest.raises(SystemExit) as stop:
        main(args)
    err = capsys.readouterr().err + (stop.value.code if isinstance(stop.value.code, str) else "")
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("INFO")]
    assert stop.value.code not in (0, None) and len(lines) == 1 and lines[0].startswith("error: "), lines
    assert all(w in lines[0] for w in words), lines[0]
    assert snapshot(finished_sweep) == before


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory) -> Path:
    sweep = tmp_path_factory.mktemp("sweep")
    for seed in (0, 1):
        (sweep / f"{seed}_seed={seed}").mkdir()
        run_like_hydra(sweep / f"{seed}_seed={seed}", *QUICK, f"seed={seed}")
    return sweep
