"""The training objective, named once by the `loss` group and used by the step, the epoch's
training loss and every evaluation, so the figures in history.csv are the loss the model minimised."""

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from expframe.build import build
from expframe.errors import ConfigError


def build_loss(loss: DictConfig, num_classes: int, device: torch.device) -> nn.Module:
    """`weight`: null or one number per class (class weights for imbalanced data), as a device tensor."""
    weight = OmegaConf.select(loss, "weight", default=None)
    if weight is None:
        return build(loss).to(device)
    values = list(weight) if OmegaConf.is_list(weight) else None
    if values is None or len(values) != num_classes or not all(isinstance(v, int | float) and v >= 0 for v in values):
        raise ConfigError(
            "loss.weight", weight, f"must be null or a list of {num_classes} non-negative numbers (one per class)"
        )
    return build(loss, weight=torch.tensor(values, dtype=torch.float32)).to(device)
