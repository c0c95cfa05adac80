"""Per-run records: history.csv (rewritten atomically every epoch) and TensorBoard events.

Everything here runs after the epoch clock has stopped; its own cost is kept in `logging_time_s`
so it never inflates the epoch time.
"""

import json
import time
import warnings
from pathlib import Path
from types import TracebackType

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from expframe.measure import PeakMemory, environment
from expframe.outputs import write_csv

MB = 1024 * 1024
# metrics.json keys shown in TensorBoard's HParams table
HPARAM_METRICS = ("val_acc", "test_acc", "best_val_acc", "final_val_loss", "epoch_time_s", "samples_per_s")


class Recorder:
    def __init__(self, cfg: DictConfig, out_dir: Path, model: nn.Module, sample: torch.Tensor, swept: dict) -> None:
        self.out_dir, self.swept = out_dir, swept
        self.histogram_every = cfg.logging.histogram_every
        self.elapsed = 0.0
        self.writer = None
        if cfg.logging.tensorboard:
            start = time.perf_counter()
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(out_dir))
            self.writer.add_text("config", f"```yaml\n{OmegaConf.to_yaml(cfg)}\n```")
            self.writer.add_text("env", f"```json\n{json.dumps(environment(sample.device), indent=2)}\n```")
            if cfg.logging.graph:
                _add_graph(self.writer, model, sample)
            self.elapsed += time.perf_counter() - start

    def __enter__(self) -> "Recorder":
        return self

    def __exit__(self, kind: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.writer is not None:
            self.writer.close()

    def epoch(self, history: list[dict], model: nn.Module, memory: PeakMemory) -> None:
        start = time.perf_counter()
        write_csv(self.out_dir / "history.csv", history)
        if self.writer is not None:
            row, w = history[-1], self.writer
            step = row["epoch"]
            for tag, key in (
                ("loss/train", "train_loss"),
                ("loss/val", "val_loss"),
                ("acc/train", "train_acc"),
                ("acc/val", "val_acc"),
                ("time/epoch_s", "epoch_time_s"),
                ("throughput/samples_per_s", "samples_per_s"),
                ("lr", "lr"),
            ):
                w.add_scalar(tag, row[key], step)
            peak = memory.read()
            if peak["peak_cuda_mem_bytes"] is not None:
                w.add_scalar("memory/peak_cuda_mb", peak["peak_cuda_mem_bytes"] / MB, step)
            w.add_scalar("memory/peak_rss_mb", peak["peak_rss_bytes"] / MB, step)
            if self.histogram_every and step % self.histogram_every == 0:
                for name, param in model.named_parameters():
                    w.add_histogram(f"weights/{name}", param.detach(), step)
                    if param.grad is not None:
                        w.add_histogram(f"grads/{name}", param.grad, step)
        self.elapsed += time.perf_counter() - start

    def finish(self, metrics: dict) -> None:
        """Final figures as scalars and as the HParams row that lines this run up with its sweep."""
        if self.writer is None:
            return
        from torch.utils.tensorboard.summary import hparams

        final = {f"final/{k}": float(metrics[k]) for k in HPARAM_METRICS if metrics.get(k) is not None}
        if metrics.get("test_acc") is not None:
            self.writer.add_scalar("acc/test", metrics["test_acc"], metrics["epochs_run"])
        params = {k: v if isinstance(v, int | float | str | bool) else str(v) for k, v in self.swept.items()}
        params["status"] = metrics["status"]
        for summary in hparams(params, final):
            self.writer.file_writer.add_summary(summary)
        for tag, value in final.items():
            self.writer.add_scalar(tag, value, metrics["epochs_run"])
        self.writer.flush()


def _add_graph(writer: object, model: nn.Module, sample: torch.Tensor) -> None:
    """Traced in eval mode so BatchNorm statistics and dropout's random stream are left untouched."""
    was_training = model.training
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # add_graph traces with torch.jit, now deprecated
        writer.add_graph(model, sample)
    model.train(was_training)
