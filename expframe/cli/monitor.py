"""`expframe-monitor RUN_DIR --data NEW`: a trained run's model meets new data, scored as a stream of
windows against the run's own validation split; each window's figures and both detectors' verdicts go
to monitor.csv, TensorBoard and the terminal, and a drift to alerts.jsonl (exit status 3).

NEW is `test` (the run's own test split, clean), or with `--corrupt NAME:SEVERITY` (the shift group's
corruptions: drift simulated in one command). The monitor's folder is inside the run folder
(`RUN_DIR/monitor/<time>/`, or `--out`): nothing is written anywhere else.
"""

import datetime
import json
import logging
import subprocess
import sys
from pathlib import Path

import torch

from expframe.cli.arguments import OneLineParser
from expframe.cli.finished_run import ModelSettings, load_run, restored_model
from expframe.data.corruption_table import SEVERITIES, TABLE
from expframe.data.corruptions import corrupt
from expframe.data.device_data import load, split_indices, take
from expframe.errors import ConfigError
from expframe.measure.drift import window_rows
from expframe.measure.features import features
from expframe.record.atomic import write_csv
from expframe.record.catalogue import CORRUPTIONS
from expframe.train.runtime import autocast, resolve_device
from expframe.train.setup import model_inputs

log = logging.getLogger("expframe")

# the exit status when a window drifted: a cron job or CI step acts on it
DRIFT_EXIT = 3
MONITOR_FILE = "monitor.csv"
ALERTS_FILE = "alerts.jsonl"
FEATURES_FILE = "features.npz"


def parse_corruption(text: str | None) -> tuple[str, int] | None:
    if text is None:
        return None
    name, _, severity = text.partition(":")
    if name not in TABLE or not severity.isdigit() or int(severity) not in SEVERITIES:
        raise ConfigError(
            "--corrupt", text, f"must be NAME:SEVERITY, NAME one of {', '.join(CORRUPTIONS)}, SEVERITY 1-5"
        )
    return name, int(severity)


def main(argv: list[str] | None = None) -> None:
    parser = OneLineParser(prog="expframe-monitor", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a finished run folder holding model.pt")
    parser.add_argument("--data", required=True, choices=["test"], help="the new data: the run's own test split")
    parser.add_argument("--corrupt", metavar="NAME:SEVERITY", help="corrupt the new data (e.g. gaussian_noise:4)")
    parser.add_argument("--window", type=int, default=100, help="samples per window (default 100)")
    parser.add_argument("--permutations", type=int, default=100, help="MMD permutations (default 100)")
    parser.add_argument("--out", type=Path, help="the monitor's folder (default RUN_DIR/monitor/<time>)")
    parser.add_argument("--save-features", action="store_true", help="write features.npz (reference, windows)")
    parser.add_argument("--alert-cmd", help="run on each drift, the alert's JSON on its stdin")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s", stream=sys.stderr)
    try:
        drifted = monitor(args)
    except ConfigError as e:
        raise SystemExit(f"error: {e}") from None
    if drifted:
        raise SystemExit(DRIFT_EXIT)


def monitor(args) -> int:
    """The windows that drifted; everything written into the monitor's folder."""
    corruption = parse_corruption(args.corrupt)
    if args.window < 2:
        raise ConfigError("--window", args.window, "must be an integer >= 2 (samples per window)")
    cfg, _ = load_run(args.run_dir)
    device = resolve_device(cfg.device)
    data = load(cfg.dataset, device)
    net = restored_model(args.run_dir, ModelSettings.of(cfg), model_inputs(data)).to(device)
    amp = autocast(cfg.precision, device)
    _, val = split_indices(len(data.train_x), cfg.dataset.val_fraction, cfg.seed, data.val_size)
    reference = features(net, take(data.train_x, val)[:], amp)
    pixels, labels = data.test_pixels(), data.test_y
    if args.window > len(pixels):
        raise ConfigError("--window", args.window, f"must be at most the {len(pixels)} samples of --data {args.data}")
    if corruption:
        pixels = corrupt(pixels, *corruption)
    new = features(net, data.normalise_pixels(pixels), amp)
    out = args.out or args.run_dir / "monitor" / datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
    out.mkdir(parents=True, exist_ok=False)
    if args.save_features:  # anyone can recompute every statistic from these
        import numpy as np

        np.savez(
            out / FEATURES_FILE,
            reference_softmax=reference.softmax.cpu().numpy(),
            reference_embedding=reference.embedding.cpu().numpy(),
            new_softmax=new.softmax.cpu().numpy(),
            new_embedding=new.embedding.cpu().numpy(),
            window=args.window,
        )
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(out))
    rows, drifted = [], 0
    generator = torch.Generator().manual_seed(0)
    for row in window_rows(reference, new, args.window, labels, args.permutations, generator):
        row = {"time": datetime.datetime.now().isoformat(timespec="seconds"), **row}
        rows.append(row)
        write_csv(out / MONITOR_FILE, rows)
        writer.add_scalar("monitor/confidence", row["confidence"], row["window"])
        for detector in ("ks", "mmd"):
            writer.add_scalar(f"monitor/{detector}/p_value", row[f"{detector}_p_value"], row["window"])
        writer.flush()
        alarm = row["ks_drift"] or row["mmd_drift"]
        print(
            f"window {row['window']}: n={row['n']} confidence={row['confidence']:.3f}"
            + (f" accuracy={row['accuracy']:.3f}" if "accuracy" in row else "")
            + f" ks p={row['ks_p_value']:.3g} mmd p={row['mmd_p_value']:.3g}"
            + (" DRIFT" if alarm else "")
        )
        if alarm:
            drifted += 1
            alert(out, row, args)
    writer.close()
    return drifted


def alert(out: Path, row: dict, args) -> None:
    """alerts.jsonl gains the window's record; `--alert-cmd` runs with it on its stdin."""
    record = {"run_dir": str(args.run_dir), "data": args.data, "corrupt": args.corrupt, **row}
    with open(out / ALERTS_FILE, "a") as f:
        f.write(json.dumps(record) + "\n")
    if args.alert_cmd:
        subprocess.run(args.alert_cmd, shell=True, input=json.dumps(record), text=True, check=False)


if __name__ == "__main__":
    main()
