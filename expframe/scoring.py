"""Scoring a model on held-out data: shared by the training run and `expframe-eval`, so both give
the same figure for the same weights.

Accuracy is an integer count of right answers over the sample count, as torchmetrics'
`multiclass_stat_scores` gives it; importing torchmetrics for that cost 3 s per process (it
imports torchvision's models, scipy.signal and torch._dynamo with its image metrics), more than
half of a run's start-up, for one comparison and one sum."""

import contextlib

import torch
from torch import nn

EVAL_BATCH = 2048


def accuracy(preds: torch.Tensor, targets: torch.Tensor) -> float:
    """From integer counts, so 834 right of 1000 is 0.834 (a float32 ratio is 0.8339999914)."""
    return int((preds == targets).sum()) / len(targets)


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    loss_fn: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    amp: contextlib.AbstractContextManager,
) -> tuple[float, float]:
    """(loss, accuracy) over all of x in eval mode; the loss is taken once over every logit, as in training."""
    model.eval()
    chunks = []
    for start in range(0, len(x), EVAL_BATCH):
        with amp:
            chunks.append(model(x[start : start + EVAL_BATCH]).float())
    logits = torch.cat(chunks)
    return loss_fn(logits, y).item(), accuracy(logits.argmax(1), y)
