"""Per-run records: history.csv (rewritten atomically every epoch) and TensorBoard events.

Everything here runs after the epoch clock has stopped; its own cost is kept in `logging_time_s`
so it never inflates the epoch time.
"""

import json
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

from expframe.record import catalogue as figures
from expframe.record.atomic import write_csv
from expframe.record.files import HISTORY_FILE

# TensorBoard's Custom Scalars tab: train and validation on one chart, as the practical's
# add_scalars('Loss/...', {'Train': ..., 'Val': ...}) does
# Whole-run figures are scalars only because HParams reads its metric values from scalars; their group
# sorts after every per-epoch group (acc, cpu, loss, lr, memory, throughput, time) so the Scalars
# page opens on curves, not on one-point charts
RUN_END_GROUP = "whole_run"

CUSTOM_LAYOUT = {
    "train vs validation": {
        "loss": ["Multiline", ["loss/train", "loss/val"]],
        "accuracy": ["Multiline", ["acc/train", "acc/val"]],
    }
}


def readable_names(model: nn.Module, layers: list[nn.Module]) -> dict[str, str]:
    """Parameter names a student can read: `hidden1.weight`, `hidden1_norm.bias`, `output.weight`
    instead of nn.Sequential positions (`1.weight`, `3.bias`). `layers`: the model's weight layers in
    order (models.initialised_layers), the last one the output."""
    if not layers:
        return {}
    modules = {id(m): name for name, m in model.named_modules()}
    labels = {modules[id(layer)]: f"hidden{i}" for i, layer in enumerate(layers[:-1], 1)}
    labels[modules[id(layers[-1])]] = "output"
    names: dict[str, str] = {}
    current = ""
    for module_name, module in model.named_modules():
        own = [p for p, _ in module.named_parameters(recurse=False)]
        if not own:
            continue
        current = labels.get(module_name, current)
        label = current if module_name in labels else f"{current}_{type(module).__name__.lower()}"
        for param in own:
            names[f"{module_name}.{param}" if module_name else param] = f"{label}.{param}"
    return names


@dataclass(frozen=True)
class RunText:
    """What a run's TensorBoard text tab says about it, computed only when TensorBoard is on."""

    config_yaml: Callable[[], str]
    env: Callable[[], dict]


class Recorder:
    """`logging`: the config's logging node (tensorboard, histogram_every, graph); `about`: what
    TensorBoard's text tab shows (the run's config as YAML, its environment); `layers`: the model's
    weight layers, for readable histogram names; `purge_step`: the first epoch of a run that continues
    (or restarts) in a folder with earlier events, from which TensorBoard hides those."""

    def __init__(
        self,
        logging: DictConfig,
        out_dir: Path,
        model: nn.Module,
        sample: torch.Tensor,
        swept: dict,
        about: "RunText",
        layers: list[nn.Module],
        hparams: bool = True,
        purge_step: int | None = None,
    ) -> None:
        self.out_dir, self.swept, self.hparams = out_dir, swept, hparams
        self.histogram_every = logging.histogram_every
        self.elapsed = 0.0
        self.writer = None
        if logging.tensorboard:
            start = time.perf_counter()
            from torch.utils.tensorboard import SummaryWriter

            quiet_writer_thread_errors()
            self.writer = SummaryWriter(log_dir=str(out_dir), purge_step=purge_step)
            self.writer.add_text("config", f"```yaml\n{about.config_yaml()}\n```")
            self.writer.add_text("env", f"```json\n{json.dumps(about.env(), indent=2)}\n```")
            if logging.graph:
                _add_graph(self.writer, model, sample)
            self.writer.add_custom_scalars(CUSTOM_LAYOUT)
            self.layer_names = readable_names(model, layers)
            self.elapsed += time.perf_counter() - start

    def __enter__(self) -> "Recorder":
        return self

    def __exit__(self, kind: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.writer is not None:
            self.writer.close()

    def save_history(self, history: list[dict]) -> None:
        write_csv(self.out_dir / HISTORY_FILE, history)

    def epoch(
        self, history: list[dict], model: nn.Module, confusion: list | None = None, class_names: list | None = None
    ) -> None:
        """`confusion`: the epoch's validation confusion matrix, drawn as an image with `class_names`."""
        start = time.perf_counter()
        self.save_history(history)
        if self.writer is not None:
            row, w = history[-1], self.writer
            step = row["epoch"]
            for f in figures.per_epoch():
                if f.tag and row[f.name] is not None:
                    w.add_scalar(f.tag, row[f.name], step)
            if confusion is not None:
                w.add_image("confusion/val", confusion_image(confusion, class_names), step)
            if self.histogram_every and step % self.histogram_every == 0:
                for name, param in model.named_parameters():
                    label = self.layer_names.get(name, name)
                    w.add_histogram(f"weights/{label}", param.detach(), step)
                    if param.grad is not None:
                        w.add_histogram(f"grads/{label}", param.grad, step)
        self.elapsed += time.perf_counter() - start

    def shift(self, accuracy: dict[str, dict[int, float]]) -> None:
        """`shift/<corruption>`: accuracy over severity (the step), one curve per corruption."""
        if self.writer is None:
            return
        start = time.perf_counter()
        for name, by_severity in accuracy.items():
            for severity, acc in by_severity.items():
                self.writer.add_scalar(f"shift/{name}", acc, severity)
        self.elapsed += time.perf_counter() - start

    def finish(self, metrics: dict) -> None:
        """Final figures as scalars and, unless this run is one fold of a cross-validated job (whose
        job-level run has the row), the HParams row that lines it up with its sweep."""
        if self.writer is None:
            return
        if metrics.get("test_confusion") is not None:
            image = confusion_image(metrics["test_confusion"], metrics.get("class_names"))
            self.writer.add_image("confusion/test", image, metrics["epochs_run"] or 0)
        if self.hparams:
            write_hparams(self.writer, metrics, self.swept)
        else:
            for tag, value in whole_run_figures(metrics).items():
                self.writer.add_scalar(tag, value, int(metrics["epochs_run"] or 0))
        self.writer.flush()


# classes up to which each cell says its count (beyond, the cells are too small to read)
COUNTED_CLASSES = 20


def quiet_writer_thread_errors() -> None:
    """A full disk fails TensorBoard's background writer thread first; its error comes back in the
    main thread at the writer's next call, where the run reports it in one line. Python would also
    print the thread's traceback: that one is not printed twice. Other threads' errors, and this
    thread's other errors, go to the previous hook."""
    previous = threading.excepthook
    if getattr(previous, "expframe", False):
        return

    def hook(args: threading.ExceptHookArgs) -> None:
        if not (isinstance(args.exc_value, OSError) and type(args.thread).__name__ == "_AsyncWriterThread"):
            previous(args)

    hook.expframe = True
    threading.excepthook = hook


def confusion_image(matrix: list[list[int]], class_names: list | None = None, cell: int = 34) -> torch.Tensor:
    """Rows the true class, columns the predicted one, each named; each cell shaded by its share of
    its row (white 0 to dark blue 1) and, up to COUNTED_CLASSES classes, its count written in it."""
    from PIL import Image, ImageDraw, ImageFont

    counts = torch.tensor(matrix, dtype=torch.float32)
    k = len(matrix)
    names = [str(n) for n in (class_names or range(k))]
    font = ImageFont.load_default(11)
    label_w = min(110, 8 + max(int(font.getlength(n)) for n in names))
    top = 16 + label_w  # the predicted classes' names, written downwards over their columns
    header = "columns: predicted"
    width = max(label_w + k * cell + 2, label_w + int(font.getlength(header)) + 4)
    image = Image.new("RGB", (width, top + k * cell + 2), "white")
    draw = ImageDraw.Draw(image)
    share = counts / counts.sum(1, keepdim=True).clamp_min(1)
    for i in range(k):
        for j in range(k):
            s = float(share[i, j])
            fill = tuple(int(255 + s * (c - 255)) for c in (8, 48, 107))
            x, y = label_w + j * cell, top + i * cell
            draw.rectangle([x, y, x + cell, y + cell], fill=fill, outline=(160, 160, 160))
            if k <= COUNTED_CLASSES:
                text = str(int(counts[i, j]))
                colour = "white" if s > 0.5 else "black"
                draw.text((x + cell / 2, y + cell / 2), text, fill=colour, font=font, anchor="mm")
    for i, name in enumerate(names):
        short = name if font.getlength(name) <= label_w - 8 else name[:12] + "…"
        draw.text((label_w - 4, top + i * cell + cell / 2), short, fill="black", font=font, anchor="rm")
        column = Image.new("RGB", (label_w, cell), "white")
        ImageDraw.Draw(column).text((4, cell / 2), short, fill="black", font=font, anchor="lm")
        image.paste(column.rotate(90, expand=True), (label_w + i * cell, 16))
    draw.text((label_w, 2), header, fill="black", font=font)
    draw.text((2, 2), "rows: true", fill="black", font=font)
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)


def whole_run_figures(metrics: dict) -> dict[str, float]:
    """HParams' metrics in figures.hparam_figures' order: accuracy, epoch time, peak memory, energy
    first. A flagged (unreliable) value is left out, so HParams never compares it."""
    return {
        f"{RUN_END_GROUP}/{f.name}": float(metrics[f.name])
        for f in figures.hparam_figures()
        if metrics.get(f.name) is not None and not figures.unreliable(f, metrics)
    }


def write_hparams(writer: object, metrics: dict, swept: dict) -> None:
    """The HParams row: the swept keys, status and contention flag, and the whole-run figures
    (scalars, since HParams reads its metric values from scalars)."""
    from torch.utils.tensorboard.summary import hparams

    final = whole_run_figures(metrics)
    params = {k: v if isinstance(v, int | float | str | bool) else str(v) for k, v in swept.items()}
    params["status"] = metrics["status"]
    for flag in figures.FLAGS:
        params[flag] = bool(metrics.get(flag))
    for summary in hparams(params, final):
        writer.file_writer.add_summary(summary)
    for tag, value in final.items():
        writer.add_scalar(tag, value, int(metrics.get("epochs_run") or 0))


def _add_graph(writer: object, model: nn.Module, sample: torch.Tensor) -> None:
    """Traced in eval mode so BatchNorm statistics and dropout's random stream are left untouched."""
    was_training = model.training
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # add_graph traces with torch.jit, now deprecated
        writer.add_graph(model, sample)
    model.train(was_training)
