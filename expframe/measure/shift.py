"""The trained model on corrupted copies of the test set: accuracy per corruption and severity.

The corrupted sets depend only on (corruption, severity, test example) (data/corruptions.py), so every
run of a sweep scores the very same images and its shift figures pair by seed like any other. They are
made once per process on the device and kept, up to `shift.cache_mb`: a sweep's later jobs in the same
process only score. A set over the budget is made again when a job needs it (identical, by its hash).
"""

import contextlib
import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from omegaconf import DictConfig, ListConfig
from torch import nn

from expframe.data.corruption_table import SEVERITIES, TABLE
from expframe.data.corruptions import corrupt
from expframe.data.device_data import DeviceData
from expframe.errors import ConfigError
from expframe.measure.scoring import EVAL_BATCH
from expframe.record.catalogue import CORRUPTIONS

# (id of the data's test set, corruption, severity) -> (corrupted 8-bit images, their sha256); the
# data object is kept with them so its id cannot be reused while the entry lives
_SETS: dict[tuple[int, str, int], tuple[torch.Tensor, str, object]] = {}


@dataclass(frozen=True)
class ShiftScores:
    # {corruption: {severity: accuracy}}
    accuracy: dict[str, dict[int, float]]
    # sha256 over every corrupted set scored, in order: equal in two runs = the same images
    inputs_sha256: str

    @staticmethod
    def none() -> dict[str, None]:
        """The figures of a run without the shift evaluation: every key, null."""
        return {"shift_acc": None, **{f"shift_acc_{name}": None for name in CORRUPTIONS}}

    def figures(self) -> dict[str, float | None]:
        """`shift_acc` (mean over every corruption and severity) and `shift_acc_<corruption>` (mean
        over severities); null for the corruptions this run did not score."""
        means = {name: sum(by.values()) / len(by) for name, by in self.accuracy.items()}
        every = [acc for by in self.accuracy.values() for acc in by.values()]
        out: dict[str, float | None] = {"shift_acc": sum(every) / len(every)}
        out.update({f"shift_acc_{name}": means.get(name) for name in CORRUPTIONS})
        return out

    def as_json(self) -> dict:
        """shift.json: {"<corruption>": {"1": acc, ...}, ..., "inputs_sha256": "..."}."""
        table = {name: {str(s): acc for s, acc in by.items()} for name, by in self.accuracy.items()}
        return {**table, "inputs_sha256": self.inputs_sha256}


def chosen(shift: DictConfig | None) -> list[tuple[str, list[int]]]:
    """The (corruption, severities) pairs a run scores; empty with shift=none or no `shift` key."""
    if shift is None or not shift.get("corruptions"):
        return []
    return [(str(name), [int(s) for s in shift.severities]) for name in shift.corruptions]


def check_settings(shift: DictConfig | None, input_shape: list[int] | None, source_target: str) -> None:
    """Before training: names and severities known, and the images can take every corruption."""
    if shift is None:
        return
    names, severities = shift.get("corruptions"), shift.get("severities")
    if not isinstance(names, ListConfig | list) or not all(isinstance(n, str) for n in names):
        raise ConfigError("shift.corruptions", names, f"must be a list of corruption names: {', '.join(CORRUPTIONS)}")
    if not names:
        return
    for name in names:
        if name not in TABLE:
            raise ConfigError("shift.corruptions", name, f"is not a corruption; choose from {', '.join(CORRUPTIONS)}")
    if len(set(names)) != len(names):
        raise ConfigError("shift.corruptions", list(names), "names a corruption twice")
    if not isinstance(severities, ListConfig | list) or not severities:
        raise ConfigError("shift.severities", severities, "must be a non-empty list of integers in 1-5")
    for s in severities:
        if isinstance(s, bool) or not isinstance(s, int) or s not in SEVERITIES:
            raise ConfigError("shift.severities", s, "must be an integer in 1-5 (ImageNet-C's severities)")
    if len(set(severities)) != len(severities):
        raise ConfigError("shift.severities", list(severities), "names a severity twice")
    budget = shift.get("cache_mb")
    if isinstance(budget, bool) or not isinstance(budget, int | float) or budget < 0:
        raise ConfigError("shift.cache_mb", budget, "must be a number of MB >= 0 (0: keep no corrupted set)")
    shape = list(input_shape or [])
    if len(shape) != 3 or source_target.endswith(".synthetic"):
        raise ConfigError(
            "shift",
            shift.get("name"),
            f"corrupts images in [0, 1] (C, H, W); this data set's samples are {shape or 'unknown'}"
            + (" random numbers (dataset=synthetic)" if source_target.endswith(".synthetic") else ""),
        )
    channels = shape[0]
    for name in names:
        allowed = TABLE[name].channels
        if allowed is not None and channels not in allowed:
            need = " or ".join(map(str, allowed))
            raise ConfigError(
                "shift.corruptions", name, f"needs {need}-channel images; this data set's have {channels}"
            )
    if min(shape[1:]) < 8:
        raise ConfigError(
            "shift", shift.get("name"), f"needs images of at least 8x8 px; these are {shape[1]}x{shape[2]}"
        )


def corrupted_set(
    data: DeviceData, clean: Callable[[], torch.Tensor], name: str, severity: int, cache_mb: float
) -> tuple[torch.Tensor, str]:
    """The test set with one corruption at one severity (8-bit, on the device) and its sha256;
    `clean` gives the clean 8-bit test set, asked for only when a set is made."""
    key = (id(data.test_x), name, severity)
    if key in _SETS:
        images, digest, _ = _SETS[key]
        return images, digest
    images = corrupt(clean(), name, severity)
    digest = hashlib.sha256(images.cpu().numpy()).hexdigest()
    kept = sum(v[0].numel() for v in _SETS.values())
    if (kept + images.numel()) / 2**20 <= cache_mb:
        _SETS[key] = (images, digest, data.test_x)
    return images, digest


@torch.inference_mode()
def accuracy_on(model: nn.Module, data: DeviceData, pixels: torch.Tensor, amp: contextlib.AbstractContextManager):
    """Accuracy on 8-bit images, normalised as the test set, in evaluation batches (no logits kept)."""
    model.eval()
    right = 0
    for start in range(0, len(pixels), EVAL_BATCH):
        with amp:
            logits = model(data.normalise_pixels(pixels[start : start + EVAL_BATCH]))
        right += int((logits.argmax(1) == data.test_y[start : start + EVAL_BATCH]).sum())
    return right / len(pixels)


def score(model: nn.Module, data: DeviceData, shift: DictConfig, amp: contextlib.AbstractContextManager) -> ShiftScores:
    accuracy: dict[str, dict[int, float]] = {}
    digests = hashlib.sha256()
    clean = functools.cache(data.test_pixels)  # un-normalised once, and only if a set is made
    for name, severities in chosen(shift):
        accuracy[name] = {}
        for severity in severities:
            images, digest = corrupted_set(data, clean, name, severity, float(shift.cache_mb))
            accuracy[name][severity] = accuracy_on(model, data, images, amp)
            digests.update(f"{name}/{severity}:{digest};".encode())
    return ShiftScores(accuracy, digests.hexdigest())
