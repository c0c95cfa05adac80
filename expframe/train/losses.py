"""The training objective, named once by the `loss` group and used by the step, the epoch's
training loss and every evaluation, so the figures in history.csv are the loss the model minimised."""

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from expframe.build import build
from expframe.errors import ConfigError

CLASS_WEIGHTS = ("none", "balanced")


def takes_soft_targets(loss: DictConfig) -> bool:
    """Whether the loss takes class probabilities (N, classes) as targets, as a mix makes them: asked of
    the loss itself, built without its class weights, on two rows of three classes."""
    spec = {k: v for k, v in OmegaConf.to_container(loss).items() if k not in ("class_weights", "weight")}
    try:
        build(OmegaConf.create(spec))(torch.zeros(2, 3), torch.full((2, 3), 1 / 3))
    except (RuntimeError, ValueError, TypeError, IndexError):
        return False
    return True


def check_class_weights(loss: DictConfig) -> None:
    choice = OmegaConf.select(loss, "class_weights", default="none")
    if choice not in CLASS_WEIGHTS:
        raise ConfigError("loss.class_weights", choice, f"must be one of {', '.join(CLASS_WEIGHTS)}")
    if choice == "balanced" and OmegaConf.select(loss, "weight", default=None) is not None:
        raise ConfigError("loss.class_weights", choice, "and loss.weight exclude each other (set one)")


def class_weights(loss: DictConfig, train_labels: torch.Tensor, num_classes: int) -> list[float] | None:
    """`balanced`: n / (k * n_c) from the training split's counts (scikit-learn's "balanced"), so
    each class weighs the same in the loss whatever its frequency; otherwise `loss.weight`."""
    if OmegaConf.select(loss, "class_weights", default="none") != "balanced":
        weight = OmegaConf.select(loss, "weight", default=None)
        return None if weight is None else list(weight)
    counts = torch.bincount(train_labels.cpu(), minlength=num_classes)
    if (counts == 0).any():
        missing = int((counts == 0).nonzero()[0])
        raise ConfigError("loss.class_weights", "balanced", f"class {missing} has no training sample to weigh")
    return (len(train_labels) / (num_classes * counts.double())).tolist()


def build_loss(loss: DictConfig, num_classes: int, device: torch.device, weight: list | None = None) -> nn.Module:
    """`weight`: null or one number per class (class weights for imbalanced data), as a device tensor;
    by default the config's `loss.weight`. `class_weights` is read by `class_weights`, not the loss."""
    spec = OmegaConf.create({k: v for k, v in OmegaConf.to_container(loss).items() if k != "class_weights"})
    weight = OmegaConf.select(spec, "weight", default=None) if weight is None else weight
    if weight is None:
        return build(spec).to(device)
    values = list(weight) if isinstance(weight, list | tuple) or OmegaConf.is_list(weight) else None
    if values is None or len(values) != num_classes or not all(isinstance(v, int | float) and v >= 0 for v in values):
        raise ConfigError(
            "loss.weight", weight, f"must be null or a list of {num_classes} non-negative numbers (one per class)"
        )
    return build(spec, weight=torch.tensor(values, dtype=torch.float32)).to(device)
