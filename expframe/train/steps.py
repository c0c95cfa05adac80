"""One optimisation step on a batch of indices, eager or replayed from a captured CUDA graph."""

from collections.abc import Callable
from contextlib import AbstractContextManager

import torch
from torch import nn

from expframe.data.device_data import DeviceData

# a batch of indices in (and, streamed, its inputs already on the device); the batch's logits (before
# the update) and the targets they were trained on out: the labels, or a mix's soft targets (N, classes)
Step = Callable[[torch.Tensor, torch.Tensor | None], tuple[torch.Tensor, torch.Tensor]]


def eager_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    loss_fn: nn.Module,
    data: DeviceData,
    amp: AbstractContextManager,
    memory_format: torch.memory_format,
    augment: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> Step:
    """`augment`: applied to each training batch and its labels after the gather; its targets are the
    labels, or soft targets for a mix (expframe.train.augment)."""

    def step(batch: torch.Tensor, inputs: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        x = data.train_x[batch] if inputs is None else inputs
        target = data.train_y[batch]
        if augment is not None:
            x, target = augment(x, target)
        with amp:
            logits = model(x.contiguous(memory_format=memory_format))
            loss = loss_fn(logits, target)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        return logits, target

    return step


class GraphedStep:
    """Captures the whole step (gather, forward, loss, backward, optimizer update) once, then replays it.

    The pattern of PyTorch's "whole-network capture": a few eager steps on a side stream first (they
    are real training steps, so optimizer state such as momentum buffers exists before capture),
    then capture into a graph fed through a static index tensor. Each replay launches the step's
    kernels at once, removing the per-kernel launch cost that dominates small models on a GPU.
    A batch of another size (the last one) runs eagerly. Requires a fixed learning rate, no
    GradScaler and a capturable optimizer; expframe.config.validate enforces the first two.
    """

    WARMUP_STEPS = 3

    def __init__(self, step: Step, optimizer, batch_size: int, device: torch.device) -> None:
        self.step, self.optimizer = step, optimizer
        self.index = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.logits: torch.Tensor | None = None
        self.targets: torch.Tensor | None = None
        self.warm = 0

    def __call__(self, batch: torch.Tensor, inputs: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if len(batch) != len(self.index):
            return self.step(batch)
        if self.warm < self.WARMUP_STEPS:
            self.warm += 1
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                out = self.step(batch)
            torch.cuda.current_stream().wait_stream(side)
            return out
        self.index.copy_(batch)
        if self.graph is None:
            self.optimizer.zero_grad(set_to_none=True)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.logits, self.targets = self.step(self.index)
        self.graph.replay()
        return self.logits, self.targets
