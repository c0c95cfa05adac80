"""Scoring a model on held-out data: shared by the training run and `expframe-eval`, so both give
the same figure for the same weights.

Accuracy is an integer count of right answers over the sample count, as torchmetrics'
`multiclass_stat_scores` gives it; importing torchmetrics for that cost 3 s per process (it
imports torchvision's models, scipy.signal and torch._dynamo with its image metrics), more than
half of a run's start-up, for one comparison and one sum. The same holds for the confusion-matrix
figures (F1, precision, sensitivity, specificity: counts and ratios, checked against torchmetrics
in the tests); AUROC, which needs the ranking of the scores, is torchmetrics', imported only for
binary tasks."""

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
) -> tuple[float, float, torch.Tensor]:
    """(loss, accuracy, logits) over all of x in eval mode; the loss is taken once over every logit,
    as in training."""
    model.eval()
    chunks = []
    for start in range(0, len(x), EVAL_BATCH):
        with amp:
            chunks.append(model(x[start : start + EVAL_BATCH]).float())
    logits = torch.cat(chunks)
    return loss_fn(logits, y).item(), accuracy(logits.argmax(1), y), logits


def confusion(preds: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts, rows the true class and columns the predicted one (torchmetrics' layout)."""
    cells = torch.bincount(targets * num_classes + preds, minlength=num_classes * num_classes)
    return cells.view(num_classes, num_classes).cpu()


def _ratio(a: int, b: int) -> float:
    """0 when the denominator is empty, as torchmetrics' default zero_division."""
    return a / b if b else 0.0


def task_figures(logits: torch.Tensor, targets: torch.Tensor, positive: int, split: str) -> tuple[dict, list]:
    """`<split>_macro_f1` always; for two classes also F1, precision, recall (sensitivity) and
    specificity of the `positive` class, and AUROC of its softmax score. Returns the figures and
    the confusion matrix as lists."""
    num_classes = logits.shape[1]
    matrix = confusion(logits.argmax(1), targets, num_classes)
    tp_all = matrix.diagonal()
    f1s = [_ratio(2 * int(tp), int(matrix[c].sum() + matrix[:, c].sum())) for c, tp in enumerate(tp_all)]
    out: dict[str, float | None] = {f"{split}_macro_f1": sum(f1s) / num_classes}
    binary = {f"{split}_{name}": None for name in ("f1", "precision", "recall", "specificity", "auroc")}
    if num_classes == 2:
        from torchmetrics.functional.classification import binary_auroc

        tp = int(matrix[positive, positive])
        fn, fp = int(matrix[positive].sum()) - tp, int(matrix[:, positive].sum()) - tp
        tn = int(matrix.sum()) - tp - fn - fp
        score = logits.float().softmax(1)[:, positive]
        binary = {
            f"{split}_f1": _ratio(2 * tp, 2 * tp + fp + fn),
            f"{split}_precision": _ratio(tp, tp + fp),
            f"{split}_recall": _ratio(tp, tp + fn),
            f"{split}_specificity": _ratio(tn, tn + fp),
            # its float32 trapezoid can land a hair above 1
            f"{split}_auroc": min(1.0, float(binary_auroc(score, (targets == positive).long()))),
        }
    return {**out, **binary}, matrix.tolist()
