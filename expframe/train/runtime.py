"""Device, numeric precision and seeding: what a run needs before it builds anything."""

import contextlib
import random
import warnings

import numpy as np
import torch
from omegaconf import DictConfig

from expframe.errors import ConfigError, short_reason


def resolve_device(device: DictConfig) -> torch.device:
    """`auto` picks CUDA when present; an explicit `cuda` never falls back to the CPU."""
    if device.type not in ("auto", "cpu", "cuda"):
        raise ConfigError("device.type", device.type, "must be auto, cpu or cuda (device=auto|cpu|cuda)")
    if device.type == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", "cuda", "CUDA is not available on this machine; use device=cpu or device=auto")
    return torch.device(device.type)


def autocast_dtype(precision: DictConfig) -> torch.dtype | None:
    name = precision.autocast_dtype
    if not name:
        return None
    dtype = getattr(torch, name, None) if isinstance(name, str) else None
    if not isinstance(dtype, torch.dtype):
        raise ConfigError("precision.autocast_dtype", name, "must be a torch dtype (float16, bfloat16) or null")
    return dtype


def autocast(precision: DictConfig, device: torch.device) -> contextlib.AbstractContextManager:
    dtype = autocast_dtype(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def check_precision(precision: DictConfig, device: torch.device) -> None:
    """Runs one tiny autocast matmul so an unsupported dtype fails before training, not inside it.

    torch does not always raise: for a dtype a device cannot autocast to, it warns and computes in
    float32, which would label fp32 figures as reduced precision. The result's dtype is checked too.
    """
    dtype = autocast_dtype(precision)
    if dtype is None:
        return
    if device.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise ConfigError(
            "precision",
            precision.name,
            f"this GPU ({torch.cuda.get_device_name(device)}) cannot run bf16; use fp16 or fp32",
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with autocast(precision, device):
                result = torch.ones(2, 2, device=device) @ torch.ones(2, 2, device=device)
            reason = None if result.dtype == dtype else (caught[0].message if caught else f"computed {result.dtype}")
        except RuntimeError as e:
            reason = e
    if reason is not None:
        reason = short_reason(str(reason), 120)
        raise ConfigError(
            "precision", precision.name, f"{device.type} cannot autocast to {dtype} here ({reason}); use fp32"
        )


# torch's own choice (the process's cores), read before any job changes it
TORCH_DEFAULT_THREADS = torch.get_num_threads()


def apply_threads(
    requested: int | None, launcher_share: int | None, free: int | None, resumed: int | None = None
) -> tuple[int, str]:
    """The one place that decides a run's torch thread count; returns it and where it came from.

    `device.threads` wins; else a resumed run's own count (`resumed`: float sums depend on it, and
    resume is exact); else the cores other processes left free when the run started (`free`,
    at least one), capped by the launcher's share (parallel jobs must not each run all-core pools)
    or, without a launcher, torch's default. A thread pool wider than the free cores waits on cores
    it does not get: beside busy processes it runs 5-30x slower (docs/shared-machines.md). The job
    restores the previous count afterwards.
    """
    if requested:
        torch.set_num_threads(requested)
        return requested, "device.threads"
    if resumed:
        torch.set_num_threads(resumed)
        return resumed, "checkpoint"
    cap, source = (launcher_share, "launcher share") if launcher_share else (TORCH_DEFAULT_THREADS, "torch default")
    threads = cap if free is None else max(1, min(cap, free))
    torch.set_num_threads(threads)
    return threads, source if threads == cap else "free cores"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def synchronize(device: torch.device) -> None:
    """Every clock read goes through here: CUDA kernels are asynchronous."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
