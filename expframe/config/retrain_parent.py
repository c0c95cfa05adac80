"""A retraining's settings and its parent run folder, checked before any data is touched: the parent is
a folder a classmate may have sent, so its config passes the checks a typed command line passes, its
weights are read only as tensors (by the run), and the network and data it was trained with must be
this run's, or its model.pt could not be loaded into this run's model."""

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from expframe.config.saved_values import check_saved_values
from expframe.data.new_data import parse
from expframe.errors import ConfigError
from expframe.record.files import MODEL_FILE
from expframe.record.run_folder import read_config
from expframe.train.checkpoint import flat
from expframe.train.retrain import chosen

# what a retraining inherits from its parent: the network its weights fit and the data it split
INHERITED = ("dataset", "model", "activation", "init")


def _number(key: str, value: object, low: float, high: float, allowed: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ConfigError(key, value, f"must be {allowed}")


def check_retrain(cfg: DictConfig) -> None:
    settings = cfg.get("retrain")
    if not chosen(settings):
        if settings is not None and settings.get("new") is not None:
            raise ConfigError("retrain.new", settings.new, "needs retrain.from (the run folder to retrain)")
        return
    _number("retrain.mix", settings.mix, 0, 1, "a number in [0, 1] (the new data's share of each epoch)")
    _number("retrain.holdout", settings.holdout, 0, 1, "a number in (0, 1) (the new data held out for the gate)")
    if settings.holdout in (0, 1):
        raise ConfigError(
            "retrain.holdout", settings.holdout, "must be a number in (0, 1) (0 or 1 leaves a side empty)"
        )
    _number("retrain.gate.min_gain", settings.gate.min_gain, -1, 1, "a number in [-1, 1] (an accuracy difference)")
    _number(
        "retrain.gate.max_forgetting",
        settings.gate.max_forgetting,
        -1,
        1,
        "a number in [-1, 1] (an accuracy difference)",
    )
    if settings.lr is not None:
        _number("retrain.lr", settings.lr, 1e-12, 1e6, "null (optimizer.lr) or a number > 0")
    if settings.new is None:
        raise ConfigError(
            "retrain.new", None, "must name the new data: test, val, test+NAME:SEVERITY or an image folder"
        )
    parse("retrain.new", settings.new)
    if cfg.get("resume") is None and cfg.cv.folds:
        raise ConfigError("retrain.from", settings["from"], "cannot be cross-validated (cv.folds is set)")
    check_parent(Path(str(settings["from"])), cfg)


def check_parent(parent: Path, cfg: DictConfig) -> None:
    if not parent.is_dir():
        raise ConfigError("retrain.from", str(parent), "is not a folder")
    if not (parent / MODEL_FILE).is_file():
        raise ConfigError("retrain.from", str(parent), f"has no {MODEL_FILE} (a failed run, or a rejected retraining)")
    try:
        saved = read_config(parent)
        check_saved_values(parent, saved)
    except ConfigError as e:
        raise ConfigError("retrain.from", str(parent), f"{e.allowed if e.key == 'RUN_DIR' else e}") from None
    for group in INHERITED:
        before = flat(OmegaConf.to_container(saved[group], resolve=True), f"{group}.")
        now = flat(OmegaConf.to_container(cfg[group], resolve=True), f"{group}.")
        differ = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
        if differ:
            key = differ[0]
            raise ConfigError(
                "retrain.from",
                str(parent),
                f"was trained with {key}={before.get(key)!r}, this run has {now.get(key)!r}: a retraining "
                f"keeps its parent's {', '.join(INHERITED)} (pass the parent's overrides)",
            )
