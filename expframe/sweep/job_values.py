"""What a job records about itself, whoever ran it (the Hydra task, or the SLURM launcher for a job
that ended without a word): its swept values, its group choices, its failure, its objective."""

import logging
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from expframe.record import catalogue as figures
from expframe.record.atomic import write_json
from expframe.record.files import METRICS_FILE

log = logging.getLogger("expframe")


def swept_values(cfg: DictConfig, overrides: list[str]) -> dict[str, object]:
    """The user's overrides as typed values: group choices by name, scalars as the config holds them."""
    swept: dict[str, object] = {}
    for override in overrides:
        key, _, text = override.lstrip("+~").partition("=")
        if key.startswith("hydra.") or key.startswith("hydra/"):
            continue
        value = OmegaConf.select(cfg, key, default=text)
        swept[key] = value if isinstance(value, int | float | str | bool) or value is None else text
    return swept


def group_choices(hydra_cfg: DictConfig) -> dict[str, str | None]:
    """The option of each of expframe's config groups (Hydra's own `hydra/...` groups left out)."""
    return {k: v for k, v in hydra_cfg.runtime.choices.items() if not k.startswith("hydra/")}


def objective(metrics: dict, names: str | ListConfig) -> float | list[float]:
    """NaN for a missing figure, or one whose estimator could not hold (its flag; a busy machine
    alone is not a reason): Optuna records the trial as failed (rather than ranking a false value)
    and the study goes on."""
    keys = list(names) if isinstance(names, ListConfig) else [names]
    values = []
    for key in keys:
        unreliable = figures.unreliable(figures.figure(key), metrics)
        if unreliable:
            log.warning("objective %s is NaN: %s", key, figures.FLAGS[figures.figure(key).flag])
        values.append(float("nan") if metrics.get(key) is None or unreliable else float(metrics[key]))
    return values if isinstance(names, ListConfig) else values[0]


def record_failure(out_dir: Path, metrics: dict) -> dict:
    """metrics.json says failed and why; when even that cannot be written (a full disk), the folder
    keeps no metrics.json, which every reader takes for an unfinished run, never a valid one."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json(out_dir / METRICS_FILE, metrics)
    except OSError as e:
        log.error("the failure could not be recorded in %s: %s", out_dir, e.strerror or e)
    return metrics
