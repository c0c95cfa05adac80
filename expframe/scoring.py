"""Scoring a model on held-out data: shared by the training run and `expframe-eval`, so both give
the same figure for the same weights. torchmetrics is imported with this module (the process's
start-up), not at the first accuracy, which would fall between two timed buckets."""

import contextlib

import torch
from torch import nn
from torchmetrics.functional.classification import multiclass_stat_scores

EVAL_BATCH = 2048


def accuracy(preds: torch.Tensor, targets: torch.Tensor, num_classes: int) -> float:
    """From torchmetrics' integer counts, so 834 right of 1000 is 0.834 (a float32 ratio is 0.8339999914)."""
    scores = multiclass_stat_scores(preds, targets, num_classes, average="micro", validate_args=False)
    right, support = scores[0].item(), scores[4].item()
    return right / support


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    loss_fn: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    amp: contextlib.AbstractContextManager,
) -> tuple[float, float]:
    """(loss, accuracy) over all of x in eval mode; the loss is taken once over every logit, as in training."""
    model.eval()
    chunks = []
    for start in range(0, len(x), EVAL_BATCH):
        with amp:
            chunks.append(model(x[start : start + EVAL_BATCH]).float())
    logits = torch.cat(chunks)
    return loss_fn(logits, y).item(), accuracy(logits.argmax(1), y, num_classes)
