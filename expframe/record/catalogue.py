"""Every figure expframe records, declared once.

history.csv's columns, metrics.json's figures, TensorBoard's tags and HParams, the objectives a
sweeper may optimise, the report's columns and the one-line summary of a run all read `FIGURES`
(at call time, so a figure added to the table is everywhere at once). Adding a figure is one
`Figure(...)` here plus the code that computes it, or a `derive` function of figures already there.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

MB = 2**20
# units of the figures CodeCarbon's method (metered or estimated) qualifies
ENERGY_UNITS = ("kWh", "gCO2eq", "W")

# How a metrics.json figure is obtained:
#   "last": the last epoch's value of `source`; "best": its best epoch (by the figure's direction);
#   "total": the sum of `source` over the epochs run; "run": computed by the training run for the
#   whole run; "derived": `derive(figures so far)`.
Summary = Literal["last", "best", "total", "run", "derived"]


@dataclass(frozen=True)
class Figure:
    name: str
    label: str
    unit: str = ""
    # True: higher is better; False: lower is better; None: neither (the learning rate)
    higher_is_better: bool | None = None
    # a history.csv column, computed every epoch
    per_epoch: bool = False
    summary: Summary | None = None
    # the per-epoch figure a "last" or "best" summary reads (default: the same name)
    source: str | None = None
    derive: Callable[[dict], float | None] | None = None
    # TensorBoard scalar tag of the per-epoch value
    tag: str | None = None
    # the final value is a column of TensorBoard's HParams table
    hparam: bool = False
    objective: bool = False
    # a default column of expframe-report's table
    report: bool = False
    # shown in the one-line summary of a run as `line=value` with this format
    line: str | None = None
    # left out of that line when null (an evaluation the run did not ask for), not shown as n/a
    line_if_set: bool = False
    fmt: str = ".4f"
    # the metrics.json flag that marks this figure unreliable in a run (FLAGS): left out of deltas,
    # never bolded, NaN to a sweeper
    flag: str | None = None
    # the seed fixes it (clocks, resident memory and the machine's load it does not)
    reproducible: bool = True

    def __post_init__(self) -> None:
        if self.flag or self.name.startswith(("peak_", "cpu_", "other_")) or self.unit == "s":
            object.__setattr__(self, "reproducible", False)

    def better(self, a: float, b: float) -> bool:
        return a > b if self.higher_is_better else a < b

    @property
    def heading(self) -> str:
        """The label with its unit, as every table and axis shows it."""
        return f"{self.label} ({self.unit})" if self.unit else self.label


SPEED = "speed_unreliable"
ENERGY = "energy_unreliable"
# A run's flags (metrics.json). Busy is not wrong: `machine_busy` says other processes used the cores
# the run left idle; a figure is left out only when its own estimator could not hold (its flag).
FLAGS = {
    "machine_busy": "the machine was busy (other processes used the cores this run left idle)",
    SPEED: "its speed figures could not hold (too few steps ran without losing their core)",
    ENERGY: "its energy could not be attributed to its own work",
}
# the flag of run folders written before machine_busy and the figure flags: every speed and energy
# figure of such a run counts as unreliable
LEGACY_FLAG = "timing_contended"


def unreliable(f: "Figure", metrics: dict) -> bool:
    """Whether a run's value of this figure is flagged (a folder from before the flags: by its
    `timing_contended`)."""
    if f.flag is None:
        return False
    if f.flag in metrics:
        return bool(metrics[f.flag])
    return bool(metrics.get(LEGACY_FLAG))


def _peak_mem_mb(figures: dict) -> float | None:
    """The figure that differs between variants: CUDA's allocator peak on a GPU; on the CPU, where
    the process's resident set is mostly the interpreter and libraries, the training's own memory."""
    peak = figures.get("peak_cuda_mem_bytes")
    peak = peak if peak is not None else figures.get("train_mem_bytes")
    return None if peak is None else peak / MB


def _energy(figures: dict) -> float | None:
    """Training and evaluation: what the run's phases drew, start-up and logging left out."""
    train, evaluation = figures.get("energy_train_kwh"), figures.get("energy_eval_kwh")
    return None if train is None or evaluation is None else train + evaluation


def _emissions(figures: dict) -> float | None:
    energy, intensity = figures.get("energy_kwh"), figures.get("carbon_intensity_g_per_kwh")
    return None if energy is None or intensity is None else energy * intensity


def _energy_per_point(figures: dict) -> float | None:
    """kWh per percentage point of test accuracy above chance (always answering the test set's most
    frequent class): what each point the model earns cost."""
    energy, acc, chance = figures.get("energy_kwh"), figures.get("test_acc"), figures.get("chance_acc")
    if energy is None or acc is None or chance is None or acc <= chance:
        return None
    return energy / ((acc - chance) * 100)


def _per_mb(key: str) -> Callable[[dict], float | None]:
    return lambda row: None if row.get(key) is None else row[key] / MB


# classifier figures from the confusion matrix (macro F1 for every task; the others of the positive
# class, binary tasks only, null otherwise) and AUROC: expframe.measure.scoring.task_figures
TASK_FIGURES = (
    ("macro_f1", "macro F1"),
    ("f1", "F1 (positive class)"),
    ("precision", "precision (positive class)"),
    ("recall", "sensitivity (recall)"),
    ("specificity", "specificity"),
    ("auroc", "AUROC"),
)
# default report columns; a column null in every run (a multiclass sweep's binary figures) is left out
REPORTED_TASK_FIGURES = ("f1", "recall", "specificity", "auroc")

# The corruptions the shift evaluation knows (expframe/data/corruption_table.py holds their
# parameters), by ImageNet-C's four families; each has its `shift_acc_<name>` figure. The first 14
# are ImageNet-C's 15 but frost (its frost photographs are not ours to ship); speckle noise, gaussian
# blur and saturate are its "extra" ones.
CORRUPTION_FAMILIES = {
    "noise": ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise"),
    "blur": ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur", "gaussian_blur"),
    "weather": ("snow", "fog", "brightness"),
    "digital": ("contrast", "elastic_transform", "pixelate", "jpeg_compression", "saturate"),
}
CORRUPTIONS = tuple(name for names in CORRUPTION_FAMILIES.values() for name in names)


FIGURES: tuple[Figure, ...] = (
    Figure("train_loss", "training loss", higher_is_better=False, per_epoch=True, tag="loss/train"),
    Figure("train_acc", "training accuracy", higher_is_better=True, per_epoch=True, tag="acc/train"),
    Figure("val_loss", "validation loss", higher_is_better=False, per_epoch=True, tag="loss/val"),
    Figure(
        "val_acc",
        "validation accuracy",
        higher_is_better=True,
        per_epoch=True,
        tag="acc/val",
        summary="last",
        hparam=True,
        objective=True,
        report=True,
        line="val_acc",
    ),
    Figure(
        "test_acc",
        "test accuracy",
        higher_is_better=True,
        summary="run",
        hparam=True,
        objective=True,
        report=True,
        line="test_acc",
    ),
    Figure(
        "best_val_acc",
        "best validation accuracy",
        higher_is_better=True,
        summary="best",
        source="val_acc",
        hparam=True,
        objective=True,
        report=True,
    ),
    *(
        figure
        for name, label in TASK_FIGURES
        for figure in (
            Figure(
                f"val_{name}",
                f"validation {label}",
                higher_is_better=True,
                per_epoch=True,
                tag=f"{name}/val",
                summary="last",
                hparam=True,
                objective=True,
            ),
            Figure(
                f"test_{name}",
                f"test {label}",
                higher_is_better=True,
                summary="run",
                hparam=True,
                objective=True,
                report=name in REPORTED_TASK_FIGURES,
            ),
        )
    ),
    # the trained model on corrupted copies of the test set (expframe/measure/shift.py): null without `shift`
    Figure(
        "shift_acc",
        "accuracy under shift (mean over corruptions and severities)",
        higher_is_better=True,
        summary="run",
        hparam=True,
        objective=True,
        report=True,
        line="shift_acc",
        line_if_set=True,
    ),
    *(
        Figure(
            f"shift_acc_{name}", f"accuracy under {name} (mean over severities)", higher_is_better=True, summary="run"
        )
        for name in CORRUPTIONS
    ),
    # a retraining's gate (expframe/train/retrain.py, retrain.json): null in an ordinary run
    Figure(
        "retrain_gain",
        "retraining: accuracy gained on the new data's held-out split (retrained - parent)",
        higher_is_better=True,
        summary="run",
        hparam=True,
        objective=True,
        report=True,
        line="gain",
        line_if_set=True,
    ),
    Figure(
        "retrain_forgetting",
        "retraining: accuracy lost on the original test split (parent - retrained)",
        higher_is_better=False,
        summary="run",
        hparam=True,
        objective=True,
        report=True,
        line="forgetting",
        line_if_set=True,
    ),
    Figure(
        "retrain_new_acc",
        "retraining: the retrained model's accuracy on the new data's held-out split",
        higher_is_better=True,
        summary="run",
        hparam=True,
        objective=True,
    ),
    Figure(
        "retrain_promoted",
        "retraining: 1 when the gate promoted the retrained model, 0 when it kept the parent",
        higher_is_better=True,
        summary="run",
        line="promoted",
        line_if_set=True,
        fmt=".0f",
    ),
    Figure("lr", "learning rate", per_epoch=True, tag="lr", fmt=".3g"),
    Figure(
        "epoch_time_s",
        "epoch time (robust)",
        "s",
        higher_is_better=False,
        per_epoch=True,
        tag="time/epoch_s",
        summary="run",
        hparam=True,
        objective=True,
        report=True,
        line="epoch",
        fmt=".3g",
        flag=SPEED,
    ),
    Figure(
        "first_epoch_time_s",
        "first (warm-up) epoch wall time",
        "s",
        higher_is_better=False,
        summary="run",
        objective=True,
        report=True,
        line="first_epoch",
        fmt=".3f",
        flag=SPEED,
    ),
    Figure(
        "samples_per_s",
        "throughput (robust)",
        "samples/s",
        higher_is_better=True,
        per_epoch=True,
        tag="throughput/samples_per_s",
        summary="run",
        hparam=True,
        objective=True,
        report=True,
        line="samples/s",
        fmt=",.0f",
        flag=SPEED,
    ),
    *(
        Figure(
            f"step_time_ms_{stat}",
            f"{label} step time",
            "ms",
            higher_is_better=False,
            per_epoch=True,
            tag=f"time/step_ms_{stat}",
            summary="run",
            objective=True,
            fmt=".3f",
            flag=SPEED,
        )
        for stat, label in (("p50", "median"), ("p90", "90th percentile"), ("min", "fastest"))
    ),
    Figure(
        "cpu_utilisation",
        "CPU time over wall time x threads",
        higher_is_better=True,
        per_epoch=True,
        tag="cpu/utilisation",
        summary="run",
        fmt=".2f",
    ),
    Figure(
        "clean_step_share",
        "share of steps that kept their core",
        higher_is_better=True,
        summary="run",
        fmt=".2f",
    ),
    Figure(
        "other_cpu_load",
        "share of the CPUs other processes used",
        higher_is_better=False,
        per_epoch=True,
        tag="cpu/other_load",
        summary="run",
        hparam=True,
        fmt=".2f",
    ),
    Figure(
        "peak_rss_mb",
        "process RSS (peak)",
        "MB",
        higher_is_better=False,
        per_epoch=True,
        tag="memory/process_rss_peak_mb",
        summary="derived",
        derive=_per_mb("peak_rss_bytes"),
        line="rss",
        fmt=",.0f",
    ),
    Figure(
        "peak_cuda_mb",
        "CUDA memory allocated (peak)",
        "MB",
        higher_is_better=False,
        per_epoch=True,
        tag="memory/peak_cuda_mb",
        derive=_per_mb("peak_cuda_mem_bytes"),
        fmt=".0f",
    ),
    Figure(
        "final_train_loss",
        "final training loss",
        higher_is_better=False,
        summary="last",
        source="train_loss",
        objective=True,
    ),
    Figure(
        "final_val_loss",
        "final validation loss",
        higher_is_better=False,
        summary="last",
        source="val_loss",
        hparam=True,
        objective=True,
    ),
    Figure("epochs_run", "epochs run", higher_is_better=False, summary="run", hparam=True, report=True, fmt="d"),
    Figure("best_epoch", "best epoch of early_stopping.monitor", summary="run", hparam=True, fmt="d"),
    Figure("stopped_epoch", "epoch early stopping ended the run", summary="run", hparam=True, fmt="d"),
    Figure(
        "train_time_s",
        "training wall time",
        "s",
        higher_is_better=False,
        summary="run",
        objective=True,
        fmt=".3f",
        flag=SPEED,
    ),
    Figure(
        "epoch_wall_s",
        "epoch wall time",
        "s",
        higher_is_better=False,
        per_epoch=True,
        tag="time/epoch_wall_s",
        summary="run",
        objective=True,
        fmt=".3f",
        flag=SPEED,
    ),
    Figure("eval_time_s", "evaluation time", "s", higher_is_better=False, summary="run", fmt=".3f"),
    Figure("logging_time_s", "logging time", "s", higher_is_better=False, summary="run", fmt=".3f"),
    Figure("startup_s", "job start to first training step", "s", higher_is_better=False, summary="run", fmt=".2f"),
    Figure(
        "process_startup_s",
        "process start to first training step (first job of a process)",
        "s",
        higher_is_better=False,
        summary="run",
        fmt=".2f",
    ),
    Figure("peak_cuda_mem_bytes", "peak CUDA memory allocated", "B", False, summary="run", objective=True, fmt=",d"),
    Figure("peak_cuda_reserved_bytes", "peak CUDA memory reserved", "B", False, summary="run", fmt=",d"),
    Figure("peak_rss_bytes", "process RSS (peak)", "B", False, summary="run", objective=True, fmt=",d"),
    Figure(
        "model_state_bytes",
        "parameters, gradients and optimizer state",
        "B",
        False,
        summary="run",
        objective=True,
        fmt=",d",
    ),
    Figure("activation_bytes", "activations saved for backward (one step)", "B", False, summary="run", fmt=",d"),
    Figure(
        "train_mem_bytes", "training memory (state + activations)", "B", False, summary="run", objective=True, fmt=",d"
    ),
    Figure(
        "peak_mem_mb",
        "train mem (tensors, peak)",
        "MB",
        higher_is_better=False,
        summary="derived",
        derive=_peak_mem_mb,
        hparam=True,
        objective=True,
        report=True,
        line="train_mem",
        fmt=".3g",
    ),
    Figure("n_params", "parameters", higher_is_better=False, summary="run", objective=True, report=True, fmt=",d"),
    # energy: CodeCarbon's offline tracker (expframe/measure/energy.py). The machine's load and the clock
    # drive it, so other programs make it unreliable like a speed figure
    Figure(
        "epoch_energy_kwh",
        "training energy of the epoch",
        "kWh",
        higher_is_better=False,
        per_epoch=True,
        tag="energy/epoch_kwh",
        fmt=".3g",
        flag=ENERGY,
    ),
    Figure(
        "epoch_eval_energy_kwh",
        "validation energy of the epoch",
        "kWh",
        higher_is_better=False,
        per_epoch=True,
        fmt=".3g",
        flag=ENERGY,
    ),
    Figure(
        "energy_train_kwh",
        "training energy",
        "kWh",
        higher_is_better=False,
        summary="total",
        source="epoch_energy_kwh",
        objective=True,
        fmt=".3g",
        flag=ENERGY,
    ),
    Figure(
        "energy_eval_kwh",
        "evaluation energy (validation and test)",
        "kWh",
        higher_is_better=False,
        summary="run",
        fmt=".3g",
        flag=ENERGY,
    ),
    Figure(
        "energy_kwh",
        "energy",
        "kWh",
        higher_is_better=False,
        summary="derived",
        derive=_energy,
        hparam=True,
        objective=True,
        report=True,
        line="energy",
        fmt=".3g",
        flag=ENERGY,
    ),
    Figure(
        "energy_measured_kwh",
        "energy as CodeCarbon measured it (emissions.csv; whole machine in machine mode)",
        "kWh",
        higher_is_better=False,
        summary="run",
        fmt=".3g",
    ),
    Figure("cpu_power_w", "mean CPU power", "W", higher_is_better=False, summary="run", fmt=".1f", flag=ENERGY),
    Figure("ram_power_w", "mean RAM power", "W", higher_is_better=False, summary="run", fmt=".1f", flag=ENERGY),
    Figure("gpu_power_w", "mean GPU power", "W", higher_is_better=False, summary="run", fmt=".1f", flag=ENERGY),
    Figure("carbon_intensity_g_per_kwh", "grid carbon intensity", "gCO2eq/kWh", summary="run", fmt=".1f"),
    Figure(
        "emissions_g_co2eq",
        "emissions",
        "gCO2eq",
        higher_is_better=False,
        summary="derived",
        derive=_emissions,
        hparam=True,
        objective=True,
        line="co2",
        fmt=".3g",
        flag=ENERGY,
    ),
    Figure("chance_acc", "accuracy of the majority class (test set)", summary="run", fmt=".4f"),
    Figure(
        "energy_kwh_per_point",
        "energy per point of test accuracy above chance",
        "kWh",
        higher_is_better=False,
        summary="derived",
        derive=_energy_per_point,
        objective=True,
        fmt=".3g",
        flag=ENERGY,
    ),
)


def figure(name: str) -> Figure:
    for f in FIGURES:
        if f.name == name:
            return f
    raise KeyError(name)


def per_epoch() -> list[Figure]:
    return [f for f in FIGURES if f.per_epoch]


def in_summary() -> list[Figure]:
    return [f for f in FIGURES if f.summary]


def names(figures: Iterable[Figure]) -> list[str]:
    return [f.name for f in figures]


def objectives() -> list[str]:
    return [f.name for f in FIGURES if f.objective]


def test_task_figures() -> list[str]:
    return [f"test_{name}" for name, _ in TASK_FIGURES]


# HParams' first metric columns (TensorBoard shows the first ones ticked): the practical's three
# figures and energy, then every other whole-run figure in declaration order
HPARAMS_FIRST = ("test_acc", "epoch_time_s", "peak_mem_mb", "energy_kwh")


def hparam_figures() -> list[Figure]:
    first = [figure(name) for name in HPARAMS_FIRST]
    return first + [f for f in FIGURES if f.hparam and f.name not in HPARAMS_FIRST]


def report_columns() -> list[str]:
    return [f.name for f in FIGURES if f.report]


def history_row(computed: dict) -> dict:
    """One epoch's row in declaration order; derived figures are computed from the others."""
    row = {"epoch": computed["epoch"]}
    for f in per_epoch():
        row[f.name] = f.derive(computed) if f.derive else computed[f.name]
    return row


def summarise(history: list[dict], computed: dict) -> dict:
    """metrics.json's figures: from the history ("last", "best"), the run ("run") or derived.

    A run that stopped before its first epoch has no per-epoch figures: they are null.
    """
    out: dict = {}
    for f in in_summary():
        if f.summary == "run":
            out[f.name] = computed[f.name]
        elif f.summary == "derived":
            out[f.name] = f.derive({**computed, **out})
        else:
            values = [row[f.source or f.name] for row in history if row.get(f.source or f.name) is not None]
            if not values:
                out[f.name] = None
            elif f.summary == "last":
                out[f.name] = values[-1]
            elif f.summary == "total":  # null unless every epoch has a value (no partial sums)
                out[f.name] = sum(values) if len(values) == len(history) else None
            else:
                out[f.name] = max(values) if f.higher_is_better else min(values)
    return out


def empty_summary() -> dict:
    """The figures of a run that failed: every key, all null, so every metrics.json has one schema."""
    return {f.name: None for f in in_summary()}


def format_value(f: Figure, value: float | None) -> str:
    if value is None:
        return "n/a"
    unit = f.unit if f.unit not in ("", "samples/s") else ""
    return f"{value:{f.fmt}}{unit}"


def summary_line(metrics: dict) -> str:
    """`ok: val_acc=0.8875 test_acc=0.8540 epoch=0.023s ...`: the figures declared with a `line`."""
    shown = [f for f in FIGURES if f.line and not (f.line_if_set and metrics.get(f.name) is None)]
    parts = [f"{f.line}={format_value(f, metrics.get(f.name))}" for f in shown]
    if metrics.get("energy_method") and metrics.get("energy_kwh") is not None:
        last_energy = max(i for i, f in enumerate(shown) if f.unit in ENERGY_UNITS)
        parts[last_energy] += f" ({metrics['energy_method']})"
    line = f"{metrics['status']}: " + " ".join(parts)
    if metrics.get("cv_folds"):
        line += f" ({metrics['cv_folds']}-fold CV: means over the folds)"
    if metrics.get("stopped_epoch"):
        line += f" stopped early at epoch {metrics['stopped_epoch']} (best {metrics['best_epoch']})"
    spent = metrics.get("time_breakdown") or {}
    if spent:
        names = {"process_startup_s": "start-up", "job_setup_s": "set-up", "training_steps_s": "steps"}
        names.update(evaluation_s="eval", logging_s="logging", bookkeeping_s="bookkeeping", clean_up_s="clean-up")
        names.update(deploy_s="deploy", shift_eval_s="shift")
        line += " time: " + " + ".join(f"{names[k]} {v:.2f}" for k, v in spent.items() if v is not None) + " s"
    return line + flag_notes(metrics)


def flag_notes(metrics: dict) -> str:
    """What the flags say, after the summary line: busy is a note, an unreliable figure a warning."""
    load = metrics.get("other_cpu_load")
    used = f" (other processes used {load:.0%} of the CPUs)" if isinstance(load, int | float) else ""
    notes = ""
    if LEGACY_FLAG in metrics and SPEED not in metrics:
        return f" warning: timing contended{used}; speed figures are unreliable" if metrics[LEGACY_FLAG] else ""
    if metrics.get("machine_busy"):
        notes += f" note: machine busy{used}"
    if metrics.get(SPEED):
        clean = metrics.get("clean_step_share")
        kept = f" (only {clean:.0%} of steps kept their core)" if isinstance(clean, int | float) else ""
        notes += f" warning: speed figures unreliable{kept}"
    if metrics.get(ENERGY):
        notes += f" warning: energy unreliable ({metrics.get('energy_attribution') or 'machine'} attribution)"
    if notes:
        notes += "; see docs/shared-machines.md"
    return notes
