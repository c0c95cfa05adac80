"""Retraining a finished run on new data, as a run of its own (`retrain.from=RUN retrain.new=DATA`), so
a retraining policy is an axis like any other (`-m retrain.mix=0,0.25,0.5,1`).

The run starts from the parent's model.pt (weights only) and trains on a fixed budget per epoch, as
many samples as the new data's training part holds: `retrain.mix` of them new, the rest a replay of
the parent's own training split (drawn once, seeded). So every policy of a sweep costs the same, and
`retrain.mix=0` (replay only: just more training) is the control the others are compared with.

No figure is scored on a sample either model trained on. The new data are cut (seeded) into a part
to train on and a held-out part (`retrain.holdout`) for the gate. When they come from the run's own
test or validation split, the samples trained on (corrupted) leave that split's clean scoring: the
original-test figures of both models use the remaining test samples only.

The gate promotes the new model when its accuracy on the new held-out data gains at least
`retrain.gate.min_gain` over the parent's and its accuracy on the original test split drops by at
most `retrain.gate.max_forgetting`: model.pt is then the new model; a rejected one is kept beside
as rejected.pt, and the parent stays the model in service. retrain.json holds both models' figures,
the decision and the lineage.
"""

import copy
import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from expframe.data.device_data import DeviceData
from expframe.data.image_store import ImageStore
from expframe.data.new_data import NewDataSpec, load_new_data, parse, run_split
from expframe.errors import ConfigError
from expframe.measure.scoring import evaluate
from expframe.record.files import MODEL_FILE, REJECTED_MODEL_FILE
from expframe.record.run_folder import read_config, read_weights


def optimizer_settings(cfg: DictConfig) -> DictConfig:
    """The optimizer node, its learning rate `retrain.lr` when a retraining sets one."""
    lr = cfg.retrain.get("lr") if chosen(cfg.get("retrain")) else None
    return cfg.optimizer if lr is None else OmegaConf.merge(cfg.optimizer, {"lr": lr})


def chosen(settings: DictConfig | None) -> bool:
    return settings is not None and settings.get("from") is not None


@dataclass(frozen=True)
class Retraining:
    parent: Path
    parent_sha256: str
    spec: NewDataSpec
    parent_weights: dict[str, torch.Tensor]
    heldout_x: torch.Tensor
    heldout_y: torch.Tensor
    sizes: dict[str, int]
    # the original test samples both models are scored on (expframe-eval re-scores the same ones)
    test_indices: list[int]


def _appended(x: torch.Tensor | ImageStore, rows: torch.Tensor) -> torch.Tensor | ImageStore:
    """`x` with `rows` after its own (uint8 images for a store, model inputs otherwise)."""
    if isinstance(x, ImageStore):
        images = torch.cat([x.images, rows.to(x.images.device)])
        return ImageStore(images, x.mean, x.std, x.device, x.streamed, x.workers)
    return torch.cat([x, rows.to(x.device)])


def _kept(n: int, dropped: torch.Tensor) -> torch.Tensor:
    keep = torch.ones(n, dtype=torch.bool)
    keep[dropped.cpu()] = False
    return keep.nonzero().flatten()


def retrain_data(
    settings: DictConfig, data: DeviceData, val_fraction: float, seed: int, resize: bool
) -> tuple[DeviceData, tuple[torch.Tensor, torch.Tensor], Retraining]:
    """The retraining run's data (the parent's training set plus the new training part), its
    (train, validation) indices, and what the gate needs."""
    parent = Path(settings["from"])
    parent_cfg = read_config(parent)
    spec = parse("retrain.new", settings.new)
    train_idx, val_idx = run_split(data, val_fraction, parent_cfg.seed)
    new = load_new_data("retrain.new", spec, data, val_idx, resize)
    if new.labels is None:
        raise ConfigError("retrain.new", str(spec), "holds unlabelled images; retraining needs class folders")
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(new.labels), generator=gen)
    n_held = round(settings.holdout * len(order))
    if n_held < 1 or n_held > len(order) - 1:
        raise ConfigError(
            "retrain.holdout", settings.holdout, f"leaves no sample to train on or to gate on of {len(order)}"
        )
    held, fit = order[:n_held], order[n_held:]
    n_new = round(settings.mix * len(fit))
    n_replay = min(len(fit) - n_new, len(train_idx))
    replay = train_idx[torch.randperm(len(train_idx), generator=gen)[:n_replay]]
    new_fit = fit[torch.randperm(len(fit), generator=gen)[:n_new]]
    as_inputs = isinstance(data.train_x, torch.Tensor)
    fit_rows = data.normalise_pixels(new.pixels[new_fit.to(new.pixels.device)]) if as_inputs else new.pixels[new_fit]
    trained = new.indices[fit] if new.indices is not None else torch.empty(0, dtype=torch.int64)
    test_keep = _kept(len(data.test_y), trained) if spec.split == "test" else torch.arange(len(data.test_y))
    val_keep = val_idx[_kept(len(val_idx), trained)] if spec.split == "val" else val_idx
    mixed = dataclasses.replace(
        data,
        train_x=_appended(data.train_x, fit_rows),
        train_y=torch.cat([data.train_y, new.labels[new_fit.to(new.labels.device)].to(data.train_y.device)]),
        test_x=_test_subset(data.test_x, test_keep),
        test_y=data.test_y[test_keep.to(data.test_y.device)],
        val_size=None,
    )
    n = len(data.train_y)
    split = (torch.cat([replay, n + torch.arange(n_new)]), val_keep)
    heldout = new.pixels[held.to(new.pixels.device)]
    weights_path = parent / MODEL_FILE
    retraining = Retraining(
        parent=parent,
        parent_sha256=hashlib.sha256(weights_path.read_bytes()).hexdigest(),
        spec=spec,
        parent_weights=read_weights(parent, MODEL_FILE),
        heldout_x=data.normalise_pixels(heldout),
        heldout_y=new.labels[held.to(new.labels.device)],
        sizes={
            "new": len(order),
            "new_trained_on": n_new,
            "new_held_out": n_held,
            "replay": n_replay,
            "per_epoch": n_new + n_replay,
            "original_test": len(test_keep),
            "validation": len(val_keep),
        },
        test_indices=test_keep.tolist(),
    )
    return mixed, split, retraining


def _test_subset(x: torch.Tensor | ImageStore, keep: torch.Tensor) -> torch.Tensor | ImageStore:
    return x.subset(keep) if isinstance(x, ImageStore) else x[keep.to(x.device)]


def _accuracy(model: nn.Module, loss_fn: nn.Module, x, y: torch.Tensor, amp) -> float:
    return evaluate(model, loss_fn, x, y, amp)[1]


def gate(retraining: Retraining, settings: DictConfig, net: nn.Module, loss_fn: nn.Module, test_x, test_y, amp) -> dict:
    """Both models on the original test split and on the new held-out data, and the decision."""
    old = copy.deepcopy(net)
    old.load_state_dict(retraining.parent_weights)
    models = {"parent": old, "retrained": net}
    scores = {
        name: {
            "original_test_acc": _accuracy(model, loss_fn, test_x, test_y, amp),
            "new_acc": _accuracy(model, loss_fn, retraining.heldout_x, retraining.heldout_y, amp),
        }
        for name, model in models.items()
    }
    gain = scores["retrained"]["new_acc"] - scores["parent"]["new_acc"]
    forgetting = scores["parent"]["original_test_acc"] - scores["retrained"]["original_test_acc"]
    promoted = gain >= settings.gate.min_gain and forgetting <= settings.gate.max_forgetting
    return {
        "parent": str(retraining.parent),
        "parent_model_sha256": retraining.parent_sha256,
        "new": str(retraining.spec),
        "mix": settings.mix,
        "holdout": settings.holdout,
        "sizes": retraining.sizes,
        "scores": scores,
        "gain": gain,
        "forgetting": forgetting,
        "gate": {"min_gain": settings.gate.min_gain, "max_forgetting": settings.gate.max_forgetting},
        "decision": "promoted" if promoted else "rejected",
        "model": MODEL_FILE if promoted else REJECTED_MODEL_FILE,
        "original_test_indices": retraining.test_indices,
    }


def figures(record: dict | None) -> dict:
    """The gate's figures for metrics.json (null when the run retrained nothing or did not finish)."""
    if record is None:
        return {"retrain_new_acc": None, "retrain_gain": None, "retrain_forgetting": None, "retrain_promoted": None}
    return {
        "retrain_new_acc": record["scores"]["retrained"]["new_acc"],
        "retrain_gain": record["gain"],
        "retrain_forgetting": record["forgetting"],
        "retrain_promoted": float(record["decision"] == "promoted"),
    }
