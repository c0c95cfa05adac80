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
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from expframe.arguments import OneLineParser
from expframe.data import load
from expframe.engine import MODEL_FILE, model_inputs
from expframe.errors import ConfigError, short_reason
from expframe.losses import build_loss
from expframe.models import ModelInputs, build_model
from expframe.run_folder import read_config, read_metrics, read_weights
from expframe.runtime import autocast, check_precision, resolve_device
from expframe.scoring import evaluate
from expframe.validate import check_values

log = logging.getLogger("expframe")


def load_run(run_dir: Path) -> tuple[DictConfig, dict]:
    """The run's saved config (its targets checked against the installed conf/) and its metrics."""
    if not run_dir.is_dir():
        raise ConfigError("RUN_DIR", str(run_dir), "is not a folder")
    cfg, metrics = read_config(run_dir), read_metrics(run_dir)
    check_saved_values(run_dir, cfg)
    if not (run_dir / MODEL_FILE).is_file():
        raise ConfigError(
            "RUN_DIR",
            str(run_dir),
            f"has no {MODEL_FILE} (the run failed, diverged or had checkpoint.save_model=false)",
        )
    return cfg, metrics


def check_saved_values(run_dir: Path, cfg: DictConfig) -> None:
    """A folder's values pass the checks a typed command line passes (a huge width, a string where a
    number goes, a missing group), before anything is built: one line naming the folder and the key."""
    try:
        check_values(cfg)
        check_precision(cfg.precision, resolve_device(cfg.device))
    except ConfigError as e:
        raise ConfigError("RUN_DIR", str(run_dir), f"its config has {e}") from None
    except (OmegaConfBaseException, AttributeError, KeyError, TypeError, ValueError) as e:
        raise ConfigError("RUN_DIR", str(run_dir), f"its config is incomplete ({short_reason(e, 160)})") from None


def restored_model(run_dir: Path, cfg: DictConfig, inputs: ModelInputs) -> torch.nn.Module:
    """The run's model built from the installed families with its saved settings, its model.pt loaded."""
    net = build_model(cfg.model, cfg.activation, cfg.init, inputs)
    try:
        net.load_state_dict(read_weights(run_dir, MODEL_FILE))
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise ConfigError("RUN_DIR", str(run_dir), f"{MODEL_FILE} does not fit the saved config ({first})") from None
    return net


def rescore(run_dir: Path, device: str | None = None) -> dict:
    """{"test_acc", "test_loss", "recorded_test_acc", "device"} for the run's saved weights."""
    cfg, recorded = load_run(run_dir)
    target = resolve_device(OmegaConf.create({"type": device}) if device else cfg.device)
    data = load(cfg.dataset, target)
    net = restored_model(run_dir, cfg, model_inputs(data)).to(target)
    loss_fn = build_loss(cfg.loss, data.num_classes, target, recorded.get("class_weights"))
    test_loss, test_acc, _ = evaluate(net, loss_fn, data.test_x, data.test_y, autocast(cfg.precision, target))
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
