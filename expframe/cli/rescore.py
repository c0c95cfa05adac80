"""`expframe-eval RUN_DIR [RUN_DIR ...]`: rebuild a run's model from its saved config and model.pt,
re-score it on the test set and print the figure next to the one the run recorded.

The model, data (same fixed test split, same normalisation) and precision come from the run's
`.hydra/config.yaml`; the weights are read with `torch.load(..., weights_only=True)`, so a
model.pt can hold tensors only, never code.
"""

import logging
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from expframe.cli.arguments import OneLineParser
from expframe.cli.finished_run import ModelSettings, load_run, restored_model
from expframe.data.device_data import load, take
from expframe.errors import ConfigError
from expframe.measure.scoring import evaluate
from expframe.record.run_folder import read_retrain_test_indices
from expframe.train.losses import build_loss
from expframe.train.runtime import autocast, resolve_device
from expframe.train.setup import model_inputs

log = logging.getLogger("expframe")


def rescore(run_dir: Path, device: str | None = None) -> dict:
    """{"test_acc", "test_loss", "recorded_test_acc", "device"} for the run's saved weights."""
    cfg, recorded = load_run(run_dir)
    target = resolve_device(OmegaConf.create({"type": device}) if device else cfg.device)
    data = load(cfg.dataset, target)
    net = restored_model(run_dir, ModelSettings.of(cfg), model_inputs(data)).to(target)
    loss_fn = build_loss(cfg.loss, data.num_classes, target, recorded.get("class_weights"))
    test_x, test_y = data.test_x, data.test_y
    if OmegaConf.select(cfg, "retrain.from") is not None:  # a retraining scored the test digits it never saw
        idx = torch.tensor(read_retrain_test_indices(run_dir, len(test_y)))
        test_x, test_y = take(test_x, idx), test_y[idx.to(test_y.device)]
    test_loss, test_acc, _ = evaluate(net, loss_fn, test_x, test_y, autocast(cfg.precision, target))
    return {
        "test_acc": test_acc,
        "test_loss": test_loss,
        "recorded_test_acc": recorded.get("test_acc"),
        "device": str(target),
    }


def main(argv: list[str] | None = None) -> None:
    parser = OneLineParser(prog="expframe-eval", description=__doc__.split("\n")[0])
    parser.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR", help="run folders holding model.pt")
    parser.add_argument("--device", choices=["cpu", "cuda"], help="score there (default: the run's device setting)")
    parser.add_argument("--check", action="store_true", help="exit 1 when a score differs from the recorded one")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s", stream=sys.stderr)
    differs = 0
    for run_dir in args.run_dirs:
        try:
            scored = rescore(run_dir, args.device)
        except ConfigError as e:
            raise SystemExit(f"error: {e}") from None
        recorded = scored["recorded_test_acc"]
        same = recorded is not None and scored["test_acc"] == recorded
        differs += not same
        verdict = "equal" if same else "differs" if recorded is not None else "nothing to compare"
        shown = "none" if recorded is None else f"{recorded:.4f}"
        print(
            f"test_acc={scored['test_acc']:.4f} test_loss={scored['test_loss']:.4f} "
            f"(recorded {shown}: {verdict}) on {scored['device']} -> {run_dir}"
        )
    if args.check and differs:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
