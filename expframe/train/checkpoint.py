"""last.ckpt: everything a run needs to continue exactly where it stopped, as a plain dict of
tensors and Python primitives, so `torch.load(..., weights_only=True)` reads it and never runs code.

What drives a run's numbers after epoch k: the weights, the optimizer's and scheduler's state, the
GradScaler, the history so far, early stopping's best, and every random stream (torch's global
generator, CUDA's, the batch-order generator, Python's and NumPy's).
"""

import io
import logging
import pickle
import random
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from expframe.errors import ConfigError, short_reason
from expframe.record.atomic import write_atomic
from expframe.record.files import CHECKPOINT_FILE, HYDRA_DIR

log = logging.getLogger(__name__)

FORMAT = 1
# top-level keys that say how a command runs, not what it trains: never a difference between a run
# and its resumption, nor between a sweep's job and its point (expframe.sweep.resume)
HOW_IT_RUNS = ("resume", "report", "sweep")
# and a resumed run may train for more epochs
MAY_CHANGE = ("epochs",)


def rng_state(batch_order: torch.Generator, augment: torch.Generator | None = None) -> dict:
    numpy = np.random.get_state()
    return {
        "augment": None if augment is None else augment.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "batch_order": batch_order.get_state(),
        "python": random.getstate(),
        "numpy": {"name": numpy[0], "keys": numpy[1].tolist(), "pos": numpy[2], "gauss": [numpy[3], numpy[4]]},
    }


def restore_rng(state: dict, batch_order: torch.Generator, augment: torch.Generator | None = None) -> None:
    torch.set_rng_state(state["torch"])
    if augment is not None:
        augment.set_state(state["augment"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    batch_order.set_state(state["batch_order"])
    random.setstate(state["python"])
    numpy = state["numpy"]
    np.random.set_state((numpy["name"], np.array(numpy["keys"], dtype=np.uint32), numpy["pos"], *numpy["gauss"]))


def save(path: Path, state: dict) -> None:
    buf = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buf)
    write_atomic(path, buf.getvalue())


def load(path: Path) -> dict:
    """Refuses anything but tensors and primitives: a crafted pickle's code never runs."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        if not path.parent.is_dir():
            raise ConfigError("resume", str(path.parent), "is not a folder (resume= takes a run folder)") from None
        if not (path.parent / HYDRA_DIR).is_dir():
            raise ConfigError(
                "resume", str(path.parent), f"has no {path.name}: it is not a run folder (no .hydra/)"
            ) from None
        raise ConfigError("resume", str(path.parent), f"has no {path.name} (the run had checkpoint.every=0)") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as e:
        raise ConfigError(
            "resume", str(path.parent), f"{path.name} cannot be read safely ({short_reason(e, 160)})"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ConfigError("resume", str(path.parent), f"{path.name} is not an expframe checkpoint")
    return state


# keys added after some checkpoints were written, with the value that reproduces how such a run ran
ADDED_SINCE = {
    "energy.attribution": "machine",
    # no shift evaluation (conf/shift/none.yaml)
    "shift.name": "none",
    "shift.corruptions": [],
    "shift.severities": [],
    "shift.cache_mb": 0,
    # an ordinary run (no retraining)
    "retrain.from": None,
    "retrain.new": None,
    "retrain.mix": 0.5,
    "retrain.holdout": 0.5,
    "retrain.lr": None,
    "retrain.gate.min_gain": 0.02,
    "retrain.gate.max_forgetting": 0.02,
}


def missing_keys(saved: dict) -> dict[str, object]:
    """The ADDED_SINCE keys a checkpoint's config lacks, with the values it ran with."""
    return {dotted: value for dotted, value in ADDED_SINCE.items() if not _has(saved, dotted.split("."))}


def _has(node: object, parts: list[str]) -> bool:
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def flat(node: object, prefix: str = "") -> dict[str, object]:
    """A nested config as dotted keys -> values."""
    if isinstance(node, dict):
        return {k: v for key, value in node.items() for k, v in flat(value, f"{prefix}{key}.").items()}
    return {prefix[:-1]: node}


def differing_keys(saved: dict, cfg: DictConfig) -> list[str]:
    """Dotted keys whose values differ between the checkpoint's config and this one (epochs may
    grow; the keys of HOW_IT_RUNS never count)."""
    now = {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v for k, v in task_items(cfg)}
    before, after = {**missing_keys(saved), **flat(saved)}, flat(now)
    return sorted(
        k
        for k in before.keys() | after.keys()
        if k not in MAY_CHANGE and k.split(".")[0] not in HOW_IT_RUNS and before.get(k) != after.get(k)
    )


def task_items(cfg: DictConfig) -> list[tuple[str, object]]:
    """The run's own keys, without Hydra's node (which only resolves inside a running job)."""
    return [(str(k), cfg[k]) for k in cfg if k != "hydra"]


def check_resumable(cfg: DictConfig) -> dict:
    """The checkpoint of `resume`, when this config may continue it; one ConfigError otherwise. A
    checkpoint from before a key in ADDED_SINCE continues as it ran: that key takes its old value."""
    state = load(Path(cfg.resume) / CHECKPOINT_FILE)
    for dotted, value in missing_keys(state["config"]).items():
        if OmegaConf.select(cfg, dotted) != value:
            log.info("resume: %s=%s, as the run was written before the key existed", dotted, value)
            with open_dict(cfg):
                OmegaConf.update(cfg, dotted, value)
    differ = differing_keys(state["config"], cfg)
    if differ:
        raise ConfigError("resume", cfg.resume, f"was trained with other values of {', '.join(differ)}")
    if cfg.epochs < state["epoch"]:
        raise ConfigError("epochs", cfg.epochs, f"must be >= the {state['epoch']} epochs the checkpoint has")
    return state
