"""`expframe-monitor RUN_DIR --data NEW`: a trained run's model meets new data, scored as a stream of
windows against the run's own validation split; each window's figures and the detectors' verdicts go
to monitor.csv, TensorBoard and the terminal, and a drift to alerts.jsonl (exit status 3).

NEW is `test` or `val` (the run's own splits, clean; `val` is the reference itself, a stream that
must not alarm), either one with `--corrupt NAME:SEVERITY` (the shift group's corruptions: a drift
simulated in one command), or an image folder. `--on-drift retrain` then retrains the run on the new
data (`retrain.from`, `retrain.new`) and prints the gate's decision. Everything is written in the
monitor's folder inside the run folder (`RUN_DIR/monitor/<time>/`, or `--out`), nothing elsewhere.
"""

import datetime
import json
import logging
import subprocess
import sys
from pathlib import Path

import torch

from expframe import PROJECT_ROOT
from expframe.cli.arguments import OneLineParser
from expframe.cli.finished_run import ModelSettings, load_run, restored_model
from expframe.data.device_data import load, take
from expframe.data.new_data import load_new_data, parse, run_split
from expframe.errors import ConfigError
from expframe.measure.drift import DETECTORS, window_rows
from expframe.measure.features import features
from expframe.record.atomic import write_csv
from expframe.record.files import RETRAIN_FILE
from expframe.train.runtime import autocast, resolve_device
from expframe.train.setup import model_inputs

log = logging.getLogger("expframe")

# the exit status when a window drifted: a cron job or CI step acts on it
DRIFT_EXIT = 3
MONITOR_FILE = "monitor.csv"
ALERTS_FILE = "alerts.jsonl"
FEATURES_FILE = "features.npz"
RETRAIN_DIR = "retrain"
# a parent's overrides a retraining must not inherit: where Hydra writes and runs, and what the
# retraining sets itself
NOT_INHERITED = ("hydra", "resume", "retrain")


def parse_detectors(text: str) -> list[str]:
    names = [n for n in text.split(",") if n]
    unknown = [n for n in names if n not in DETECTORS]
    if unknown or not names:
        raise ConfigError("--detectors", text, f"must be a comma-separated list of {', '.join(DETECTORS)}")
    return list(dict.fromkeys(names))


def positive_int(key: str, text: str) -> int:
    if not text.isdigit() or int(text) < 2:
        raise ConfigError(key, text, "must be an integer >= 2")
    return int(text)


def main(argv: list[str] | None = None) -> None:
    parser = OneLineParser(prog="expframe-monitor", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a finished run folder holding model.pt")
    parser.add_argument("--data", required=True, help="the new data: test, val, or an image folder")
    parser.add_argument("--corrupt", metavar="NAME:SEVERITY", help="corrupt the new data (e.g. gaussian_noise:4)")
    parser.add_argument("--window", default="100", help="samples per window (default 100)")
    parser.add_argument("--detectors", default="ks,mmd", help="which detectors (default ks,mmd)")
    parser.add_argument("--permutations", default="100", help="MMD permutations (default 100)")
    parser.add_argument("--out", type=Path, help="the monitor's folder (default RUN_DIR/monitor/<time>)")
    parser.add_argument("--save-features", action="store_true", help="write features.npz (reference, new data)")
    parser.add_argument("--alert-cmd", help="run on each drift, the alert's JSON on its stdin")
    parser.add_argument(
        "--on-drift", choices=["alert", "retrain"], default="alert", help="retrain: retrain the run when drift is found"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s", stream=sys.stderr)
    try:
        drifted = monitor(args)
    except ConfigError as e:
        raise SystemExit(f"error: {e}") from None
    if drifted:
        raise SystemExit(DRIFT_EXIT)


def monitor(args) -> int:
    """The windows that drifted; everything written into the monitor's folder, and only once every
    input was checked."""
    spec = parse("--data", args.data, args.corrupt)
    window = positive_int("--window", args.window)
    permutations = positive_int("--permutations", args.permutations)
    detectors = parse_detectors(args.detectors)
    if args.on_drift == "retrain" and spec.split is None and spec.corruption is not None:
        raise ConfigError(
            "--corrupt", args.corrupt, "with a folder cannot be retrained on (retrain.new names no such data)"
        )
    cfg, _ = load_run(args.run_dir)
    device = resolve_device(cfg.device)
    data = load(cfg.dataset, device)
    net = restored_model(args.run_dir, ModelSettings.of(cfg), model_inputs(data)).to(device)
    amp = autocast(cfg.precision, device)
    _, val = run_split(data, cfg.dataset.val_fraction, cfg.seed)
    new_data = load_new_data("--data", spec, data, val, cfg.dataset.get("image_size") is not None)
    if window > len(new_data.pixels):
        raise ConfigError("--window", window, f"must be at most the {len(new_data.pixels)} samples of --data {spec}")
    if args.on_drift == "retrain" and new_data.labels is None:
        raise ConfigError("--on-drift", "retrain", f"needs labelled new data; {spec} has no class folders")
    reference = features(net, take(data.train_x, val)[:], amp)
    new = features(net, data.normalise_pixels(new_data.pixels), amp)
    out = args.out or args.run_dir / "monitor" / datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
    if out.exists():
        raise ConfigError("--out", str(out), "exists already; a monitor writes a new folder")
    out.mkdir(parents=True)
    if args.save_features:  # anyone can recompute every statistic from these
        import numpy as np

        np.savez(
            out / FEATURES_FILE,
            reference_softmax=reference.softmax.cpu().numpy(),
            reference_embedding=reference.embedding.cpu().numpy(),
            new_softmax=new.softmax.cpu().numpy(),
            new_embedding=new.embedding.cpu().numpy(),
            window=window,
        )
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(out))
    rows, drifted = [], 0
    generator = torch.Generator().manual_seed(0)
    for row in window_rows(reference, new, window, new_data.labels, detectors, permutations, generator):
        row = {"time": datetime.datetime.now().isoformat(timespec="seconds"), **row}
        rows.append(row)
        write_csv(out / MONITOR_FILE, rows)
        writer.add_scalar("monitor/confidence", row["confidence"], row["window"])
        for detector in detectors:
            writer.add_scalar(f"monitor/{detector}/p_value", row[f"{detector}_p_value"], row["window"])
        writer.flush()
        alarm = row["alert"]
        print(
            f"window {row['window']}: n={row['n']} confidence={row['confidence']:.3f}"
            + (f" accuracy={row['accuracy']:.3f}" if "accuracy" in row else "")
            + "".join(f" {d} p={row[f'{d}_p_value']:.3g}" for d in detectors)
            + (" DRIFT" if alarm else ""),
            flush=True,
        )
        if alarm:
            drifted += 1
            alert(out, row, args, str(spec))
    writer.close()
    print(f"{drifted} of {len(rows)} windows drifted -> {out}")
    if drifted and args.on_drift == "retrain":
        retrain(args.run_dir, str(spec), out / RETRAIN_DIR)
    return drifted


def inherited_overrides(run_dir: Path) -> list[str]:
    """The parent's own command-line overrides (its network and data), without those that say where
    and how Hydra runs: they come from a folder someone sent and must not move the retraining's output."""
    import yaml

    path = run_dir / ".hydra" / "overrides.yaml"
    saved = yaml.safe_load(path.read_text()) if path.is_file() else []
    if not isinstance(saved, list) or not all(isinstance(o, str) for o in saved):
        raise ConfigError("RUN_DIR", str(run_dir), ".hydra/overrides.yaml is not a list of overrides")
    return [o for o in saved if o.lstrip("+~").split("=")[0].split(".")[0].split("/")[0] not in NOT_INHERITED]


def retrain(run_dir: Path, new: str, out: Path) -> None:
    """`python train.py <the parent's overrides> retrain.from=RUN_DIR retrain.new=NEW`, its run folder
    inside the monitor's; prints the gate's decision."""
    command = [
        sys.executable,
        str(PROJECT_ROOT / "train.py"),
        *inherited_overrides(run_dir),
        f"retrain.from={_quoted(str(run_dir.resolve()))}",
        f"retrain.new={_quoted(new)}",
        f"hydra.run.dir={_quoted(str(out.resolve()))}",
    ]
    print("retraining:", " ".join(command[1:]), flush=True)
    done = subprocess.run(command, check=False)
    record = out / RETRAIN_FILE
    if done.returncode != 0 or not record.is_file():
        print(f"retraining failed (exit {done.returncode}): see {out}")
        return
    gate = json.loads(record.read_text())
    print(
        f"gate: {gate['decision']} (gain {gate['gain']:+.3f}, at least {gate['gate']['min_gain']:g}; forgetting "
        f"{gate['forgetting']:+.3f}, at most {gate['gate']['max_forgetting']:g}) -> {out / str(gate['model'])}"
    )


def _quoted(value: str) -> str:
    """A Hydra override value taken literally (a path with `=`, `,` or spaces)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def alert(out: Path, row: dict, args, data: str) -> None:
    """alerts.jsonl gains the window's record; `--alert-cmd` runs with it on its stdin."""
    record = {"run_dir": str(args.run_dir), "data": data, **row}
    with open(out / ALERTS_FILE, "a") as f:
        f.write(json.dumps(record) + "\n")
    if args.alert_cmd:
        subprocess.run(args.alert_cmd, shell=True, input=json.dumps(record), text=True, check=False)


if __name__ == "__main__":
    main()
