"""expframe-monitor and gated retraining on a real trained run: a stream that drifts alarms with both
detectors and a clean one mostly does not; monitor.csv, alerts.jsonl, the alert command, TensorBoard
and the saved features agree; image folders are read like the run's data or refused in one line; a
retraining is a run whose gate decides which model serves, and a policy sweep is compared with
retrain.mix=0."""

import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import ks_2samp

from tests.conftest import run_train_in_process
from tests.test_drift import direct_mmd2

# the drift: the run's own test split under Gaussian noise at severity 4
NOISY = ("--data", "test", "--corrupt", "gaussian_noise:4")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """The default run (mnist_5k, the default MLP, seed 0): the model the issue's checks name."""
    folder = tmp_path_factory.mktemp("monitor") / "run"
    done = run_train_in_process("energy.track=false", f"hydra.run.dir={folder}")
    assert done.returncode == 0, done.stderr
    return folder


def monitor(*args: str) -> tuple[int, str]:
    import contextlib
    import io

    from expframe.cli.monitor import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as stop:
        main(list(args))
        raise SystemExit(0)
    code = stop.value.code
    return (code if isinstance(code, int) else (0 if code is None else 1)), out.getvalue() + (
        code if isinstance(code, str) else ""
    )


def test_noise_alarms_both_detectors_and_every_record_agrees(run, tmp_path):
    out = tmp_path / "noisy"
    received = tmp_path / "received.jsonl"
    code, printed = monitor(
        str(run),
        *NOISY,
        "--window",
        "250",
        "--out",
        str(out),
        "--save-features",
        "--alert-cmd",
        f"cat >> {received}; echo >> {received}",
    )
    assert code == 3, printed
    assert printed.count("DRIFT") == 4 and "4 of 4 windows drifted" in printed
    alerts = [json.loads(line) for line in (out / "alerts.jsonl").read_text().splitlines()]
    assert len(alerts) == 4 and all(a["ks_drift"] and a["mmd_drift"] for a in alerts)
    assert [json.loads(line) for line in received.read_text().splitlines() if line] == alerts
    rows = pd.read_csv(out / "monitor.csv")
    assert list(rows["window"]) == [0, 1, 2, 3] and list(rows["n"]) == [250] * 4
    assert rows["ks_drift"].all() and rows["mmd_drift"].all() and (rows["ks_threshold"] == 0.005).all()
    assert rows["alert"].all()
    assert np.allclose(rows[[f"share_{c}" for c in range(10)]].sum(axis=1), 1)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out)).Reload()
    for tag, column in (("monitor/ks/p_value", "ks_p_value"), ("monitor/confidence", "confidence")):
        assert [e.step for e in events.Scalars(tag)] == [0, 1, 2, 3]
        assert np.allclose([e.value for e in events.Scalars(tag)], rows[column], rtol=1e-6)
    saved = np.load(out / "features.npz")
    for w in range(4):
        new = saved["new_softmax"][w * 250 : (w + 1) * 250]
        ref = saved["reference_softmax"]
        p = min(ks_2samp(ref[:, j].astype(np.float64), new[:, j].astype(np.float64)).pvalue for j in range(10))
        assert p == pytest.approx(rows["ks_p_value"][w], rel=1e-9), "scipy on the saved features gives the p-value"
    first = saved["new_embedding"][:250].astype(np.float64)
    statistic = direct_mmd2(saved["reference_embedding"].astype(np.float64), first)
    assert statistic == pytest.approx(rows["mmd_statistic"][0], rel=1e-6), "numpy on the saved features"
    assert len(saved["reference_softmax"]) == 400, "the reference is the run's validation split"


def test_a_clean_stream_mostly_stays_quiet_and_the_reference_replayed_never_alarms(run, tmp_path):
    """The clean test split against the validation split: windows of 100 (the default)."""
    code, printed = monitor(str(run), "--data", "test", "--out", str(tmp_path / "clean"))
    rows = pd.read_csv(tmp_path / "clean" / "monitor.csv")
    assert len(rows) == 10
    assert rows["ks_drift"].sum() <= 3 and rows["mmd_drift"].sum() <= 3, rows[["ks_p_value", "mmd_p_value"]]
    assert rows["alert"].sum() <= 3, "most windows raise no alert"
    assert code == (3 if rows["alert"].any() else 0)
    code, printed = monitor(str(run), "--data", "val", "--out", str(tmp_path / "val"))
    assert code == 0 and "0 of 4 windows drifted" in printed
    assert not (tmp_path / "val" / "alerts.jsonl").exists()


def write_pngs(folder: Path, pixels: torch.Tensor, labels: torch.Tensor | None) -> None:
    from torchvision.io import write_png

    for i, image in enumerate(pixels.cpu()):
        where = folder / (str(int(labels[i])) if labels is not None else "")
        where.mkdir(parents=True, exist_ok=True)
        write_png(image, str(where / f"{i:04d}.png"))


def test_an_image_folder_is_scored_like_the_split_it_came_from(run, tmp_path):
    """200 test digits as PNG files in class folders: the accuracy the monitor reports is the model's
    on those digits, computed here apart; the same files loose are unlabelled (no accuracy)."""
    from expframe.cli.finished_run import ModelSettings, load_run, restored_model
    from expframe.data.device_data import load
    from expframe.train.setup import model_inputs

    cfg, _ = load_run(run)
    data = load(cfg.dataset, torch.device("cpu"))
    net = restored_model(run, ModelSettings.of(cfg), model_inputs(data)).eval()
    with torch.inference_mode():
        expected = (net(data.test_x[:200]).argmax(1) == data.test_y[:200]).double().mean().item()
    write_pngs(tmp_path / "labelled", data.test_pixels()[:200], data.test_y[:200])
    monitor(str(run), "--data", str(tmp_path / "labelled"), "--out", str(tmp_path / "m1"))
    rows = pd.read_csv(tmp_path / "m1" / "monitor.csv")
    assert (rows["accuracy"] * rows["n"]).sum() / rows["n"].sum() == pytest.approx(expected, abs=1e-12)
    write_pngs(tmp_path / "loose", data.test_pixels()[:200], None)
    monitor(str(run), "--data", str(tmp_path / "loose"), "--window", "200", "--out", str(tmp_path / "m2"))
    loose = pd.read_csv(tmp_path / "m2" / "monitor.csv")
    assert "accuracy" not in loose.columns and list(loose["n"]) == [200]


def bad_folders(root: Path) -> dict[str, Path]:
    from torchvision.io import write_png

    folders = {}
    for name, shape, subfolder in (
        ("big", (1, 64, 64), "3"),
        ("rgb", (3, 28, 28), "3"),
        ("cat", (1, 28, 28), "cat"),
    ):
        where = root / name / subfolder
        where.mkdir(parents=True)
        write_png(torch.zeros(shape, dtype=torch.uint8), str(where / "a.png"))
        folders[name] = root / name
    (root / "mixed" / "3").mkdir(parents=True)
    write_png(torch.zeros(1, 28, 28, dtype=torch.uint8), str(root / "mixed" / "3" / "a.png"))
    write_png(torch.zeros(1, 28, 28, dtype=torch.uint8), str(root / "mixed" / "b.png"))
    folders["mixed"] = root / "mixed"
    (root / "broken" / "3").mkdir(parents=True)
    (root / "broken" / "3" / "a.png").write_bytes(b"not a png")
    folders["broken"] = root / "broken"
    (root / "empty").mkdir()
    folders["empty"] = root / "empty"
    return folders


@pytest.mark.parametrize(
    "case, words",
    [
        (["--data", "{big}"], ["--data", "1x64x64", "1x28x28"]),
        (["--data", "{rgb}"], ["--data", "3x28x28", "1x28x28"]),
        (["--data", "{cat}"], ["--data", "'cat'", "0, 1, 2"]),
        (["--data", "{mixed}"], ["--data", "mixes class folders"]),
        (["--data", "{broken}"], ["not a readable image"]),
        (["--data", "{empty}"], ["--data", "no .png"]),
        (["--data", "train"], ["--data='train'", "test, val"]),
        (["--data", "test", "--window", "1001"], ["--window=1001", "at most the 1000"]),
        (["--data", "test", "--window", "1"], ["--window='1'", ">= 2"]),
        (["--data", "test", "--detectors", "ks,chi2"], ["--detectors='ks,chi2'", "ks, mmd"]),
        (["--data", "test", "--corrupt", "gaussian_noise:6"], ["--corrupt='gaussian_noise:6'", "SEVERITY 1-5"]),
        (["--data", "test+frost:2"], ["--data='test+frost:2'", "gaussian_noise"]),
        (["--data", "test+fog:2", "--corrupt", "fog:3"], ["--data", "once"]),
        (["--data", "test", "--permutations", "many"], ["--permutations", "integer"]),
        (["--data", "{loose}", "--window", "2", "--on-drift", "retrain"], ["--on-drift", "no class folders"]),
    ],
)
def test_bad_new_data_is_one_line_and_writes_nothing(run, tmp_path_factory, case, words):
    root = tmp_path_factory.getbasetemp() / "bad_folders"
    folders = bad_folders(root) if not root.exists() else {p.name: p for p in root.iterdir()}
    if not (root / "loose").exists():
        from torchvision.io import write_png

        (root / "loose").mkdir()
        write_png(torch.zeros(1, 28, 28, dtype=torch.uint8), str(root / "loose" / "a.png"))
        write_png(torch.zeros(1, 28, 28, dtype=torch.uint8), str(root / "loose" / "b.png"))
    folders["loose"] = root / "loose"
    args = [a.format(**{k: str(v) for k, v in folders.items()}) for a in case]
    before = sorted(str(p) for p in run.rglob("*"))
    code, printed = monitor(str(run), *args)
    lines = [line for line in printed.splitlines() if line.strip()]
    assert code not in (0, 3) and len(lines) == 1 and lines[0].startswith("error: "), lines
    assert all(w in lines[0] for w in words), lines[0]
    assert sorted(str(p) for p in run.rglob("*")) == before, "a refused monitor wrote into the run folder"


def test_a_hostile_model_file_is_never_unpickled(run, tmp_path):
    """A model.pt that runs a command when unpickled: the monitor and a retraining refuse it in one
    line, and the command never runs."""
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    hostile = tmp_path / "hostile"
    shutil.copytree(run, hostile, ignore=shutil.ignore_patterns("monitor"))
    (hostile / "model.pt").write_bytes(pickle.dumps(Payload()))
    code, printed = monitor(str(hostile), "--data", "test")
    assert code not in (0, 3) and "model.pt" in printed and not marker.exists()
    done = run_train_in_process(f"retrain.from={hostile}", "retrain.new=test", f"hydra.run.dir={tmp_path / 'r'}")
    assert done.returncode != 0 and "model.pt" in done.stderr and not marker.exists()


def test_the_whole_loop_in_one_command_retrains_and_gates(run, tmp_path):
    out = tmp_path / "loop"
    code, printed = monitor(
        str(run),
        *NOISY,
        "--window",
        "500",
        "--on-drift",
        "retrain",
        "--out",
        str(out),
    )
    assert code == 3 and "gate: " in printed, printed
    child = out / "retrain"
    record = json.loads((child / "retrain.json").read_text())
    metrics = json.loads((child / "metrics.json").read_text())
    import hashlib

    assert record["parent"] == str(run.resolve())
    assert record["parent_model_sha256"] == hashlib.sha256((run / "model.pt").read_bytes()).hexdigest()
    assert record["new"] == "test+gaussian_noise:4"
    sizes = record["sizes"]
    assert sizes["new"] == 1000 and sizes["new_held_out"] == 500 and sizes["original_test"] == 500, (
        "the test digits trained on (corrupted) leave the clean test scoring"
    )
    assert sizes["new_trained_on"] + sizes["replay"] == sizes["per_epoch"] == 500
    assert record["scores"]["retrained"]["original_test_acc"] == metrics["test_acc"]
    gain = record["scores"]["retrained"]["new_acc"] - record["scores"]["parent"]["new_acc"]
    assert record["gain"] == pytest.approx(gain) and metrics["retrain_gain"] == pytest.approx(gain)
    promoted = record["gain"] >= 0.02 and record["forgetting"] <= 0.02
    assert record["decision"] == ("promoted" if promoted else "rejected") in printed
    assert (child / "model.pt").exists() == promoted and (child / "rejected.pt").exists() != promoted
    assert metrics["model_file"] == record["model"]
    assert len(record["original_test_indices"]) == 500
    assert promoted, "noise at severity 4 is learned: +4.8 points on the held-out noisy digits, none forgotten"
    from expframe.cli.rescore import rescore

    scored = rescore(child)
    assert scored["test_acc"] == scored["recorded_test_acc"] == metrics["test_acc"], "eval scores the same digits"
    overrides = (child / ".hydra" / "overrides.yaml").read_text()
    assert "retrain.from" in overrides and "hydra" not in overrides.replace("hydra.run.dir", "")


def test_a_rejected_retraining_keeps_the_parent_in_service(run, tmp_path):
    child = tmp_path / "child"
    done = run_train_in_process(
        "energy.track=false",
        f"retrain.from={run}",
        "retrain.new=test+gaussian_noise:4",
        "retrain.gate.min_gain=1",
        "retrain.lr=0.5",
        f"hydra.run.dir={child}",
    )
    assert done.returncode == 0, done.stderr
    assert set(pd.read_csv(child / "history.csv")["lr"]) == {0.5}, "retrain.lr is the retraining's learning rate"
    record = json.loads((child / "retrain.json").read_text())
    assert record["decision"] == "rejected" and record["model"] == "rejected.pt"
    assert (child / "rejected.pt").exists() and not (child / "model.pt").exists()
    assert json.loads((child / "metrics.json").read_text())["retrain_promoted"] == 0
    code, printed = monitor(str(child), "--data", "test")
    assert code not in (0, 3) and "has no model.pt" in printed
    done = run_train_in_process(f"retrain.from={child}", "retrain.new=test", f"hydra.run.dir={tmp_path / 'g'}")
    assert done.returncode != 0 and "retrain.from" in done.stderr and "model.pt" in done.stderr


def test_retraining_on_a_labelled_folder_and_on_the_validation_split(run, tmp_path):
    from expframe.data.device_data import load
    from tests.conftest import make_cfg

    data = load(make_cfg().dataset, torch.device("cpu"))
    write_pngs(tmp_path / "new", data.test_pixels()[:300], data.test_y[:300])
    child = tmp_path / "from_folder"
    done = run_train_in_process(
        "energy.track=false", f"retrain.from={run}", f"retrain.new={tmp_path / 'new'}", f"hydra.run.dir={child}"
    )
    assert done.returncode == 0, done.stderr
    sizes = json.loads((child / "retrain.json").read_text())["sizes"]
    assert sizes["new"] == 300 and sizes["original_test"] == 1000 and sizes["validation"] == 400
    child = tmp_path / "from_val"
    done = run_train_in_process(
        "energy.track=false", f"retrain.from={run}", "retrain.new=val+defocus_blur:3", f"hydra.run.dir={child}"
    )
    assert done.returncode == 0, done.stderr
    sizes = json.loads((child / "retrain.json").read_text())["sizes"]
    assert sizes["new"] == 400 and sizes["validation"] == 200, "the validation digits trained on leave its scoring"


def test_a_retraining_policy_sweep_is_reported_against_replay_only(run, tmp_path):
    sweep = tmp_path / "sweep"
    done = run_train_in_process(
        "-m",
        "energy.track=false",
        f"retrain.from={run}",
        "retrain.new=test+gaussian_noise:4",
        "retrain.mix=0,0.5,1",
        "seed=0,1",
        f"hydra.sweep.dir={sweep}",
    )
    assert done.returncode == 0, done.stderr
    summary = (sweep / "summary.md").read_text()
    assert "Against the baseline (retrain.mix=0)" in summary and "Δ retrain_gain" in summary
    deltas = pd.read_csv(sweep / "deltas.csv")
    gains = deltas[deltas["figure"] == "retrain_gain"]
    assert sorted(gains["retrain.mix"].astype(float)) == [0, 0.5, 1]


def test_a_retraining_inherits_only_the_parents_network_and_data_overrides(tmp_path):
    from expframe.cli.monitor import inherited_overrides

    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "overrides.yaml").write_text(
        "- model.depth=3\n- hydra.run.dir=/etc\n- +hydra.job.chdir=true\n- retrain.from=x\n- resume=y\n"
        "- optimizer=adam\n- hydra/launcher=joblib\n"
    )
    assert inherited_overrides(tmp_path) == ["model.depth=3", "optimizer=adam"]


def test_the_docs_monitor_commands_run_as_written(run, tmp_path):
    """Every `expframe-monitor` line of the README's and docs' bash blocks, on the default run (the
    page's `runs/served`)."""
    import re
    import shlex

    from tests.support.documentation import documentation

    blocks = re.findall(r"```bash\n(.*?)```", documentation(), flags=re.S)
    commands = [line.strip() for b in blocks for line in b.splitlines() if line.startswith("expframe-monitor ")]
    assert commands, "the docs show the monitor"
    for i, command in enumerate(commands):
        args = shlex.split(command)[1:]
        args = [str(run) if a == "runs/served" else a for a in args]
        code, printed = monitor(*args, "--out", str(tmp_path / str(i)))
        assert code in (0, 3) and "windows drifted" in printed, printed
        if "retrain" in args:
            assert "gate: " in printed and (tmp_path / str(i) / "retrain" / "retrain.json").exists()
