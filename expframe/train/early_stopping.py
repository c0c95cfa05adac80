"""Stop when the monitored figure has not improved for `patience` epochs, keeping the best weights.

An observer after the epoch clock: it reads the epoch's history row and, on an improvement, copies
the weights (on their device) so the test figures and model.pt can come from the best epoch.
"""

import torch
from omegaconf import DictConfig
from torch import nn

from expframe.record import catalogue as figures


class EarlyStopping:
    def __init__(self, settings: DictConfig) -> None:
        self.patience = settings.patience
        self.monitor = figures.figure(settings.monitor)
        self.min_delta = settings.min_delta
        self.restore_best = settings.restore_best
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.stopped_epoch: int | None = None

    def improved(self, value: float) -> bool:
        if self.best is None:
            return True
        margin = value - self.best if self.monitor.higher_is_better else self.best - value
        return margin > self.min_delta

    def epoch(self, row: dict, model: nn.Module) -> bool:
        """True when the run should stop after this epoch."""
        value = row[self.monitor.name]
        if self.improved(value):
            self.best, self.best_epoch = value, row["epoch"]
            if self.patience is not None and self.restore_best:
                self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            return False
        if self.patience is not None and row["epoch"] - self.best_epoch >= self.patience:
            self.stopped_epoch = row["epoch"]
            return True
        return False

    def state(self) -> dict:
        """For a checkpoint: tensors and primitives only."""
        return {
            "best": self.best,
            "best_epoch": self.best_epoch,
            "best_state": self.best_state,
            "stopped_epoch": self.stopped_epoch,
        }

    def load_state(self, state: dict) -> None:
        self.best, self.best_epoch = state["best"], state["best_epoch"]
        self.best_state, self.stopped_epoch = state["best_state"], state["stopped_epoch"]

    def restore(self, model: nn.Module) -> None:
        """Back to the best epoch's weights, when the run stopped or ended after it."""
        if self.best_state is not None:
            model.load_state_dict(self.best_state)
