"""Peak memory per run and the environment a figure was measured in."""

import functools
import os
import platform
import resource
import subprocess
import sys
from pathlib import Path

import torch

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


class PeakMemory:
    """CUDA peaks from the caching allocator; CPU peak resident set size (VmHWM) of the process.

    On Linux the RSS high-water mark is reset at the start of the run (writing 5 to
    /proc/self/clear_refs), so the figure is the run's own peak: Python, torch, the resident data
    set and everything the run allocates. Where that reset is impossible the figure is the process
    lifetime peak and `peak_rss_scope` says so.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.rss_scope = "process"

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        try:
            _CLEAR_REFS.write_text("5")
            self.rss_scope = "run"
        except OSError:
            self.rss_scope = "process"

    def read(self) -> dict[str, int | str | None]:
        cuda = self.device.type == "cuda"
        return {
            "peak_cuda_mem_bytes": torch.cuda.max_memory_allocated(self.device) if cuda else None,
            "peak_cuda_reserved_bytes": torch.cuda.max_memory_reserved(self.device) if cuda else None,
            "peak_rss_bytes": _peak_rss_bytes(),
            "peak_rss_scope": self.rss_scope,
        }


def _peak_rss_bytes() -> int:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


@functools.cache
def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


@functools.cache
def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device) -> dict[str, object]:
    cuda = device.type == "cuda"
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "device_name": torch.cuda.get_device_name(device) if cuda else _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "git_commit": _git_commit(),
        "host": platform.node(),
        "slurm_job_id": slurm_job_id(),
    }


def slurm_job_id() -> str | None:
    """As squeue and scancel name it: `123_4` for task 4 of array job 123 (a sweep's jobs)."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID")


def process_age_s() -> float | None:
    """Seconds since this process started (Linux), for start-up figures."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return uptime - start_ticks / os.sysconf("SC_CLK_TCK")


def _storages(tensors: list[torch.Tensor | None]) -> dict[int, int]:
    """Bytes per storage: views and shared tensors count once."""
    out: dict[int, int] = {}
    for t in tensors:
        if isinstance(t, torch.Tensor):
            storage = t.untyped_storage()
            out[storage.data_ptr()] = storage.nbytes()
    return out


def model_state_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Parameters, their gradients and the optimizer's state (Adam: two moment buffers per
    parameter and a 4-byte `step` tensor per parameter tensor), as the tensors existing after a step."""
    tensors: list[torch.Tensor | None] = []
    for p in model.parameters():
        tensors += [p, p.grad]
    for state in optimizer.state.values():
        tensors += [v for v in state.values() if isinstance(v, torch.Tensor)]
    return sum(_storages(tensors).values())


class ActivationProbe:
    """Bytes autograd saves for backward during one training step (the activations; the parameters,
    which exist anyway, left out), summed over unique storages as the step saves them."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.parameters = set(_storages(list(model.parameters())))
        self.saved: dict[int, int] = {}

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in self.parameters:
            self.saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    def __enter__(self) -> "ActivationProbe":
        self.hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda tensor: tensor)
        self.hooks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.hooks.__exit__(*exc)

    @property
    def bytes(self) -> int:
        return sum(self.saved.values())
