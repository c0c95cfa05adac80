"""A finished run folder made usable again: its config read as data and checked like a typed command
line, its model rebuilt from the installed families and its weights loaded (weights_only). Shared by
`expframe-eval` and `expframe-deploy`."""

from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig

from expframe.config.saved_values import check_saved_values
from expframe.errors import ConfigError
from expframe.models.contract import ModelInputs, build_model
from expframe.record.files import MODEL_FILE
from expframe.record.run_folder import read_config, read_metrics, read_weights


@dataclass(frozen=True)
class ModelSettings:
    """What rebuilds a run's network: its model, activation and init nodes."""

    model: DictConfig
    activation: DictConfig
    init: DictConfig

    @classmethod
    def of(cls, cfg: DictConfig) -> "ModelSettings":
        return cls(cfg.model, cfg.activation, cfg.init)


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


def restored_model(run_dir: Path, settings: ModelSettings, inputs: ModelInputs) -> torch.nn.Module:
    """The run's model built from the installed families with its saved settings, its model.pt loaded."""
    net = build_model(settings.model, settings.activation, settings.init, inputs)
    try:
        net.load_state_dict(read_weights(run_dir, MODEL_FILE))
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise ConfigError("RUN_DIR", str(run_dir), f"{MODEL_FILE} does not fit the saved config ({first})") from None
    return net
