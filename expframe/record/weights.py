"""A run's weights on disk: a plain state dict, written atomically; kept apart from atomic.py so what
reads run folders without torch (the report) never imports it."""

import io
from pathlib import Path

import torch

from expframe.record.atomic import write_atomic


def save_state_dict(path: Path, state: dict) -> None:
    """A plain state_dict (tensors only, moved to the CPU), so `torch.load(weights_only=True)` reads it."""
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in state.items()}, buf)
    write_atomic(path, buf.getvalue())
