"""What the drift detectors compare: a model's softmax outputs (BBSD's input) and its penultimate-layer
embeddings (the MMD's), for a batch of inputs, in evaluation batches."""

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from expframe.measure.scoring import EVAL_BATCH


@dataclass(frozen=True)
class Features:
    # (n, classes), rows sum to 1
    softmax: torch.Tensor
    # (n, width of the last layer's input)
    embedding: torch.Tensor

    def __len__(self) -> int:
        return len(self.softmax)

    def window(self, start: int, stop: int) -> "Features":
        return Features(self.softmax[start:stop], self.embedding[start:stop])


def last_linear(model: nn.Module) -> nn.Linear:
    """The classifier head: the model's last nn.Linear (every expframe family ends in one)."""
    heads = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not heads:
        raise ValueError(f"{type(model).__name__} has no nn.Linear layer to take embeddings before")
    return heads[-1]


@torch.inference_mode()
def features(model: nn.Module, x: torch.Tensor, amp: contextlib.AbstractContextManager) -> Features:
    """Softmax outputs and the head's inputs, float32 on x's device, in eval mode."""
    model.eval()
    taken: list[torch.Tensor] = []
    hook = last_linear(model).register_forward_hook(lambda _m, inputs, _out: taken.append(inputs[0].float()))
    chunks = []
    try:
        for start in range(0, len(x), EVAL_BATCH):
            with amp:
                chunks.append(model(x[start : start + EVAL_BATCH]).float().softmax(1))
    finally:
        hook.remove()
    return Features(torch.cat(chunks), torch.cat(taken).flatten(1))
