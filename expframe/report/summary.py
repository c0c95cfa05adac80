"""`expframe-report PATH...`: one table and a few figures from every run below the given folders.

A configuration is a run's whole resolved config (`.hydra/config.yaml`) with the option of each
config group: two runs are repeats only when everything but the seed is equal, whatever was typed
on the command line. Rows are configurations, with mean ± std and n over their repeats; the
columns that name a configuration are the keys that differ between them. Runs that diverged or
failed stay in the table with their status; job folders without metrics.json (an interrupted
sweep) are skipped with a warning.
"""

import csv
import functools
import json
import logging
import os
import re
from pathlib import Path

from expframe import PROJECT_ROOT
from expframe.record import catalogue as figures
from expframe.record.atomic import write_atomic
from expframe.record.files import CONFIG_FILE, HISTORY_FILE, HYDRA_DIR, METRICS_FILE, MULTIRUN_FILE
from expframe.report.deploy_table import deploy_table, write_deploy_figure
from expframe.report.format import ABSENT, as_text, number, plus_minus
from expframe.report.green import early_stopping_savings, energy_footnote
from expframe.report.grow import grow_command, sweep_folder
from expframe.report.plotting import min_max as _min_max
from expframe.report.plotting import save as _save
from expframe.report.robustness import heatmap, robustness_section, scored_corruptions, severity_curve
from expframe.report.statistics import ablation_tables, best_table_tex, find_baseline

log = logging.getLogger("expframe")

REPEAT_KEYS = ("seed",)
# neither a configuration nor a repeat: what a sweeper returns, the report switch, the preset names
# (their effect is in the resolved config) and the machine-local file
NOT_CONFIG = ("objective", "report.auto", "experiment", "hparams_search", "local")


def natural_key(path: Path) -> list:
    """Job folders in numeric order: 2_... before 10_..."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


STATUSES = ("ok", "diverged", "failed", "interrupted", "pruned")


def check_run(metrics: object) -> str | None:
    """Why a parsed metrics.json cannot be a row (None when it can)."""
    if not isinstance(metrics, dict):
        return f"not a JSON object (a {type(metrics).__name__})"
    if metrics.get("status") not in STATUSES:
        return f"status is {metrics.get('status')!r}, not one of {', '.join(STATUSES)}"
    for name in figures.names(figures.in_summary()):
        value = metrics.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            return f"{name} is {value!r}, not a number"
    if not isinstance(metrics.get("swept", {}), dict):
        return "swept is not an object"
    return None


def find_runs(paths: list[Path]) -> tuple[list[dict], list[Path], list[str]]:
    """Runs (metrics.json), incomplete job folders (a Hydra job folder without one) and the files
    skipped as unreadable or malformed, each with its reason (also logged as a warning)."""
    runs, incomplete, skipped = [], [], []
    for root in paths:
        for hydra_dir in sorted(root.rglob(str(HYDRA_DIR)), key=natural_key):
            job = hydra_dir.parent
            path = job / METRICS_FILE
            try:
                text = path.read_text()
            except FileNotFoundError:
                if not (job / MULTIRUN_FILE).exists():
                    incomplete.append(job)
                continue
            except (OSError, UnicodeDecodeError) as e:
                skipped.append(f"{path}: unreadable ({type(e).__name__})")
                continue
            try:
                metrics = json.loads(text)
            except ValueError as e:
                skipped.append(f"{path}: corrupt JSON ({e})")
                continue
            reason = check_run(metrics)
            if reason is None and (job / CONFIG_FILE).exists():
                try:
                    saved_config(job)
                except ValueError as e:
                    skipped.append(f"{job / '.hydra' / 'config.yaml'}: {e}")
                    continue
            if reason:
                skipped.append(f"{path}: {reason}")
                continue
            metrics["run_dir"] = str(job)
            runs.append(metrics)
    for line in skipped:
        log.warning("skipped %s", line)
    return runs, incomplete, skipped


def _flatten(node: object, prefix: str = "") -> dict[str, object]:
    if isinstance(node, dict):
        out: dict[str, object] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: json.dumps(node) if isinstance(node, list) else node}


@functools.cache
def saved_config(job: Path) -> dict | None:
    """The job's `.hydra/config.yaml` as plain data (never instantiated), parsed once; None when the
    folder has none; ValueError naming what is wrong when it cannot be read as a mapping."""
    import yaml

    path = job / CONFIG_FILE
    if not path.exists():
        return None
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        config = yaml.load(path.read_text(), Loader=loader)
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"unreadable ({type(e).__name__})") from None
    except yaml.YAMLError as e:
        raise ValueError(f"corrupt YAML ({' '.join(str(e).split())[:120]})") from None
    if not isinstance(config, dict):
        raise ValueError("corrupt: not a mapping of keys")
    return config


def run_config(run: dict) -> dict[str, object]:
    """Group choices, then every resolved key, dotted (`optimizer`, `optimizer.lr`, ...).

    A run folder without a readable config (written by other means) is described by its swept keys.
    """
    try:
        config = saved_config(Path(run["run_dir"]))
    except ValueError:
        config = None
    if config is None:
        return {"seed": run.get("seed"), **(run.get("swept") or {})}
    choices = run.get("choices") or {}
    flat: dict[str, object] = {}
    for group, node in config.items():
        if group in choices:  # also for an option whose node is empty (`scheduler: none` is `{}`)
            flat[group] = choices[group]
        flat.update(_flatten(node, f"{group}."))
    return {k: v for k, v in flat.items() if k not in NOT_CONFIG and not k.startswith("report.")}


# an axis whose control is not its default: a retraining policy is compared with replaying the old
# data only (retrain.mix=0: what more training alone gains), not with the default mix
CONTROLS: dict[str, object] = {"retrain.mix": 0}


def default_baseline() -> dict[str, object]:
    """What a report compares with unless --baseline says otherwise: the defaults, and the controls."""
    return {**project_defaults(), **CONTROLS}


def project_defaults() -> dict[str, object]:
    """The project's default configuration, flat like a run's: what every key holds when nobody set it.
    Composed once per process (the report worker composes it while the sweep runs)."""
    return dict(_project_defaults())


@functools.cache
def _project_defaults() -> dict[str, object]:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf, open_dict

    def composed():
        return compose("train", return_hydra_config=True)

    if GlobalHydra.instance().is_initialized():  # inside a Hydra app (the end-of-sweep report)
        cfg = composed()
    else:
        with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf")):
            cfg = composed()
    choices = {k: v for k, v in cfg.hydra.runtime.choices.items() if not k.startswith("hydra/")}
    with open_dict(cfg):
        del cfg["hydra"]
    return {**choices, **_flatten(OmegaConf.to_container(cfg))}


def runs_table(runs: list[dict]):
    """One row per run: its configuration, status and every metrics.json figure of the table.

    `df.attrs`: `config_keys` (in config order) and `choices` (the group names among them).
    """
    import pandas as pd

    summary = figures.names(figures.in_summary())
    rows, configs, config_keys, choices = [], [], {}, set()
    for m in runs:
        config = run_config(m)
        configs.append(config)
        config_keys.update(dict.fromkeys(config))
        choices.update(m.get("choices") or {})
        row = {"status": m.get("status"), **{k: m.get(k) for k in summary}, "run_dir": m["run_dir"]}
        for flag in figures.FLAGS:  # a folder from before the flags: its timing_contended
            row[flag] = bool(m[flag]) if flag in m else bool(m.get(figures.LEGACY_FLAG))
        row["unreliable"] = row[figures.SPEED] or row[figures.ENERGY]
        row["energy_method"] = m.get("energy_method")
        row["energy_attribution"] = m.get("energy_attribution")
        row["cv_folds"] = m.get("cv_folds")
        row.update({f"{k}_fold_std": m.get(f"{k}_std") for k in summary})
        job = Path(m["run_dir"]).name.split("_", 1)[0]
        row["job"] = int(job) if job.isdigit() else None
        rows.append(row)
    df = pd.DataFrame(rows)
    numeric = [*summary, *(f"{k}_fold_std" for k in summary), "cv_folds"]
    df = pd.concat([df.drop(columns=numeric), df[numeric].apply(pd.to_numeric, errors="coerce")], axis=1)
    # config values as the text an override would use, built from the runs' own values: pandas would
    # turn [None, 3] into floats with a NaN that some versions then drop from "what varies"
    config_columns = pd.DataFrame(
        {k: [as_text(c.get(k, ABSENT)) for c in configs] for k in config_keys}, index=df.index
    )
    df = pd.concat([config_columns, df], axis=1)
    df.attrs["config_keys"] = list(config_keys)
    df.attrs["choices"] = sorted(choices)
    return df


def reliable_values(df):
    """The table with every flagged value blanked (NaN): a figure whose estimator could not hold in a
    run is left out of that run's means, the figures, best.tex's bold and the deltas; the rest of the
    run counts. summary.csv keeps the values as measured, with the flags beside them."""
    out = df.copy()
    for f in figures.in_summary():
        if f.flag and f.name in out:
            out.loc[out[f.flag], [f.name, f"{f.name}_fold_std"]] = float("nan")
    return out


def _determined_by(df, group: str, key: str) -> bool:
    """`optimizer.lr` says nothing new when each optimizer choice has one lr."""
    return df.groupby(df[group].astype(str))[key].agg(lambda s: s.astype(str).nunique()).max() <= 1


def varying_keys(df) -> list[str]:
    """The keys whose values differ between runs, without those a group's choice already decides;
    an Optuna sweep's trial number (`trial`) comes first."""
    keys = [k for k in df.attrs.get("config_keys", []) if df[k].astype(str).nunique() > 1]
    groups = {k for k in keys if k in df.attrs.get("choices", [])}
    shown = [k for k in keys if not ("." in k and k.split(".")[0] in groups and _determined_by(df, k.split(".")[0], k))]
    return sorted(shown, key=lambda k: k != "trial")


def optuna_best(paths: list[Path], df) -> list[str]:
    """The best trial (or Pareto front) an Optuna sweep recorded in its folder, found among the runs.

    The best trial of a resumed study may come from an earlier command's folder: then it says so.
    """
    import yaml

    lines = []
    for path in paths:
        try:
            results = yaml.safe_load((path / "optimization_results.yaml").read_text())
        except OSError:
            continue
        if "solutions" in results:
            solutions, title = results["solutions"], "Optuna Pareto front"
        else:
            solutions, title = [{"params": results["best_params"], "values": [results["best_value"]]}], "Optuna best"
        found = []
        for solution in solutions:
            match = df[df["status"] == "ok"]
            for key, value in solution["params"].items():
                if key in match.columns:
                    match = match[match[key].astype(str) == str(value)]
            trials = sorted({int(t) for t in match.get("trial", []) if str(t).isdigit()})
            where = f"trial {', '.join(map(str, trials))}" if trials else "a trial outside these folders"
            params = ", ".join(f"{k}={_short(v)}" for k, v in solution["params"].items())
            values = ", ".join(number(v) for v in solution["values"])
            found.append(f"{where}: value {values} ({params})")
        lines.append(f"{title} ({path}):\n\n" + "\n".join(f"- {line}" for line in found))
    return lines


def grouped(df, by: list[str], metrics: list[str]):
    """mean ± std and n per configuration (and status: failed runs are never averaged in)."""
    keys = [*by, "status"]
    frame = df.assign(**{k: df[k].astype(str) for k in by})
    groups = frame.groupby(keys, sort=False, dropna=False)
    stats = groups[metrics].agg(["mean", "std"])
    out = groups.size().rename("n").to_frame()
    out["busy"] = groups["machine_busy"].sum().astype(int)
    out["unreliable"] = groups["unreliable"].sum().astype(int)
    # a single cross-validated run: its spread is over its folds (n = folds), not over seeds
    folds = groups["cv_folds"].max().fillna(0).astype(int)
    single_cv = (out["n"] == 1) & (folds > 0)
    for metric in metrics:
        out[f"{metric}_mean"] = stats[(metric, "mean")]
        out[f"{metric}_std"] = stats[(metric, "std")].fillna(0.0)
        fold_std = groups[f"{metric}_fold_std"].first()
        out.loc[single_cv, f"{metric}_std"] = fold_std[single_cv].fillna(0.0)
        out[metric] = [plus_minus(m, s) for m, s in zip(out[f"{metric}_mean"], out[f"{metric}_std"], strict=True)]
    out["n"] = [
        f"{k} folds" if one else f"{n} seeds x {k} folds" if k else str(n)
        for n, k, one in zip(out["n"], folds, single_cv, strict=True)
    ]
    return out.reset_index()


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of runs no other run beats on both accuracy (higher) and epoch time (lower)."""
    order = sorted(range(len(points)), key=lambda i: (points[i][1], -points[i][0]))
    front, best = [], float("-inf")
    for i in order:
        if points[i][0] > best:
            front.append(i)
            best = points[i][0]
    return front


# the widest line of a label on a figure; a longer one wraps after a comma, never cut
LABEL_WIDTH = 40


def short_label(run, by: list[str]) -> str:
    """The shortest name that tells runs apart: the trial number in an Optuna sweep, else the keys,
    floats to 3 significant digits, wrapped at LABEL_WIDTH characters."""
    if "trial" in by:
        return f"trial {run['trial']}"
    return wrapped([f"{k}={_short(run[k])}" for k in by]) or "all"


def wrapped(parts: list[str]) -> str:
    """`a=1, b=2, c=3` on lines of at most LABEL_WIDTH characters, broken between parts."""
    lines: list[str] = []
    for part in parts:
        if lines and len(lines[-1]) + 2 + len(part) <= LABEL_WIDTH:
            lines[-1] += f", {part}"
        else:
            lines.append(part)
    return ",\n".join(lines)


def _short(value: object) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return f"{number:.3g}" if not float(number).is_integer() else str(value)


def write_figures(
    df, by: list[str], out: Path, forest: tuple[dict, list[str]] | None = None, fork: bool = False
) -> list[Path]:
    """The report's figures, each drawn by its own painter; `forest`: the ablation's (results, keys);
    `fork`: see `paint`."""
    import matplotlib

    matplotlib.use("Agg")
    # categorical axes of numbers-as-text (trial numbers, widths) are meant, not worth a log line each
    logging.getLogger("matplotlib.category").setLevel(logging.WARNING)
    import matplotlib.pyplot as plt
    import seaborn as sns

    out.mkdir(parents=True, exist_ok=True)
    ok = df[df["status"] == "ok"]
    if ok.empty:
        return []
    data = ok.assign(variant=[short_label(run, by) for _, run in ok.iterrows()])
    painters = [
        lambda: _metrics_figure(data, out / "metrics.png", plt, sns),
        lambda: _loss_figure(data, out / "loss_curves.png", plt, sns),
        lambda: _tradeoff(data, "epoch_time_s", "val_acc", out / "pareto.png", plt, sns),
        lambda: write_deploy_figure(ok, by, out / "deploy.png", plt),
    ]
    if data["energy_kwh"].notna().any() and data["test_acc"].notna().any():
        painters.append(lambda: _tradeoff(data, "energy_kwh", "test_acc", out / "accuracy_vs_energy.png", plt, sns))
    if forest:
        painters.append(lambda: write_forest(*forest, out / "deltas.png"))
    corruptions = scored_corruptions(ok)
    if corruptions:
        painters.append(lambda: heatmap(data, corruptions, out / "shift_heatmap.png", plt, sns))
        painters.append(lambda: severity_curve(data, out / "shift_severity.png", plt, sns))
    return [path for path in paint(painters, fork) if path is not None]


def paint(painters: list, fork: bool = False) -> list[Path | None]:
    """Each painter's file. `fork`: each figure is drawn in a forked child, so the figures of a
    sweep's report take the time of the slowest one per core, not of all of them. Only a
    single-threaded process may fork (the report worker), never one with torch's or CodeCarbon's threads."""
    if not fork or len(painters) < 2:
        return [painter() for painter in painters]
    import tempfile

    children = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, painter in enumerate(painters):
            pid = os.fork()
            if pid == 0:  # the child: draw, say where, leave without running the parent's clean-up
                try:
                    path = painter()
                    Path(tmp, str(i)).write_text("" if path is None else str(path))
                    os._exit(0)
                except BaseException:
                    log.exception("figure %d failed", i)
                    os._exit(1)
            children.append(pid)
        for pid in children:
            os.waitpid(pid, 0)
        answers = [Path(tmp, str(i)) for i in range(len(painters))]
        return [Path(a.read_text()) if a.exists() and a.read_text() else None for a in answers]


def _metrics_figure(data, path: Path, plt, sns) -> Path:
    fig, axes = plt.subplots(1, 3, figsize=(15, 0.35 * data["variant"].nunique() + 3), layout="constrained")
    for ax, metric in zip(axes, ("val_acc", "epoch_time_s", "peak_mem_mb"), strict=True):
        # dots with min-max whiskers: no whisker crosses zero, and the axis zooms to the data
        sns.pointplot(data=data, y="variant", x=metric, errorbar=_min_max, linestyle="none", capsize=0.3, ax=ax)
        sns.stripplot(data=data, y="variant", x=metric, color="0.4", size=3, alpha=0.6, ax=ax)
        ax.set_xlabel(axis_label(metric))
        ax.set_ylabel("")
        if ax is not axes[0]:
            ax.set_yticklabels([])
    fig.suptitle("mean (dot), min-max over seeds (whiskers) and every run (grey)")
    return _save(fig, path, plt)


def _loss_figure(data, path: Path, plt, sns) -> Path | None:
    import pandas as pd
    from matplotlib.ticker import MaxNLocator

    curves = _loss_curves(data)
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(9, 5), layout="constrained")
    sns.lineplot(data=pd.DataFrame(curves), x="epoch", y="loss", hue="variant", style="split", errorbar=_min_max, ax=ax)
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("train vs validation loss per variant (dashed: validation; band: min-max over seeds)")
    ax.legend(bbox_to_anchor=(1.02, 1), loc="upper left", fontsize=8)
    return _save(fig, path, plt)


def _tradeoff(data, cost: str, gain: str, path: Path, plt, sns) -> Path:
    """Per configuration: mean with min-max whiskers over seeds, and the Pareto front of the means
    (no other configuration has a lower cost and a higher gain)."""
    means = (
        data.groupby("variant", sort=False)
        .agg(
            gain=(gain, "mean"),
            lo_gain=(gain, "min"),
            hi_gain=(gain, "max"),
            cost=(cost, "mean"),
            lo_cost=(cost, "min"),
            hi_cost=(cost, "max"),
        )
        .dropna()
    )
    points = list(zip(means["gain"], means["cost"], strict=True))
    front = pareto_front(points)
    fig, ax = plt.subplots(figsize=(8, 5), layout="constrained")
    for (variant, row), color in zip(means.iterrows(), sns.color_palette(n_colors=len(means)), strict=True):
        ax.errorbar(
            row["cost"],
            row["gain"],
            xerr=[[row["cost"] - row["lo_cost"]], [row["hi_cost"] - row["cost"]]],
            yerr=[[row["gain"] - row["lo_gain"]], [row["hi_gain"] - row["gain"]]],
            fmt="o",
            color=color,
            label=variant,
            capsize=2,
        )
    if len(front) >= 2:  # a front of one point is that point: no line, so no legend entry
        fx, fy = [points[i][1] for i in front], [points[i][0] for i in front]
        ax.plot(fx, fy, "k--", lw=1, drawstyle="steps-post", label="Pareto front (of the means)")
    ax.set_xlabel(
        axis_label(cost) + (" (estimated)" if _estimated(data) and figures.figure(cost).unit == "kWh" else "")
    )
    ax.set_ylabel(axis_label(gain))
    ax.set_title("per configuration: mean, min-max over seeds")
    ax.legend(bbox_to_anchor=(1.02, 1), loc="upper left", fontsize=8)
    return _save(fig, path, plt)


def _estimated(df) -> bool:
    return bool((df.get("energy_method") == "estimated").any()) if "energy_method" in df else False


def axis_label(name: str) -> str:
    return figures.figure(name).heading


def write_forest(results: dict, keys: list[str], path: Path) -> Path:
    """One row per configuration, its Δ against the baseline with the 95% interval, a line at 0,
    one panel per figure: the ablation papers' figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    # every panel has the same rows (the configurations compared in any of them), labelled once
    compared = list(dict.fromkeys(r.config for rows in results.values() for r in rows if r.delta is not None))
    labels = [wrapped([f"{k}={_short(v)}" for k, v in zip(keys, c, strict=True)]) for c in compared]
    label_lines = max((label.count("\n") + 1 for label in labels), default=1)
    label_inches = 0.075 * max((len(line) for label in labels for line in label.split("\n")), default=10)
    fig, axes = plt.subplots(
        1,
        len(results),
        figsize=(label_inches + 3.2 * len(results), 0.3 * label_lines * max(1, len(compared)) + 1.4),
        layout="constrained",
        squeeze=False,
    )
    panels = list(axes[0])
    for ax, (figure, rows) in zip(panels, results.items(), strict=True):
        tested = {r.config: r for r in rows if r.delta is not None}
        ys = [i for i, c in enumerate(compared) if c in tested]
        shown = [tested[c] for c in compared if c in tested]
        ax.set_title(f"Δ {axis_label(figure)}", fontsize=9)
        ax.set_yticks(range(len(compared)), labels if ax is panels[0] else [""] * len(compared), fontsize=8)
        ax.set_ylim(len(compared) - 0.5, -0.5)
        if not shown:  # say why the panel is empty rather than leave it blank
            ax.text(0.5, 0.5, empty_panel_note(rows), ha="center", va="center", fontsize=8, transform=ax.transAxes)
            ax.set_xticks([])
            continue
        ax.errorbar(
            [r.delta for r in shown],
            ys,
            xerr=[[r.delta - r.low for r in shown], [r.high - r.delta for r in shown]],
            fmt="o",
            capsize=3,
        )
        ax.axvline(0, color="k", lw=1)
    fig.suptitle("each configuration minus the baseline, 95% interval")
    return _save(fig, path, plt)


def empty_panel_note(rows: list) -> str:
    """Why a figure has no interval to draw: its values were left out, or too few seeds ran."""
    if any(r.left_out for r in rows):
        return "no interval:\nvalues left out\nas unreliable"
    return "no interval:\nfewer than 2 seeds\nper configuration"


def _loss_curves(data) -> list[dict]:
    rows = []
    for _, run in data.iterrows():
        try:
            with open(Path(run["run_dir"]) / HISTORY_FILE) as f:
                for h in csv.DictReader(f):
                    for split in ("train", "val"):
                        rows.append(
                            {
                                "variant": run["variant"],
                                "epoch": int(h["epoch"]),
                                "split": split,
                                "loss": float(h[f"{split}_loss"]),
                            }
                        )
        except (OSError, KeyError, ValueError):
            continue
    return rows


def grow_note(paths: list[Path], df, seeds_wanted: int | None) -> str:
    """Where the seeds needed exceed the seeds run: the command that grows the sweep in place."""
    seeds = sorted({int(s) for s in df["seed"].dropna()}) if "seed" in df.columns else []
    folder = sweep_folder(paths)
    if not seeds_wanted or seeds_wanted <= len(seeds) or folder is None:
        return ""
    command = grow_command(folder, seeds, seeds_wanted)
    if command is None:
        return ""
    return f"\n\nto run {seeds_wanted} seeds, grow this sweep in its folder (only the new jobs train):\n\n    {command}"


def report(
    paths: list[Path],
    out: Path,
    by: list[str] | None = None,
    metrics: list[str] | None = None,
    sort: str | None = None,
    plots: bool = True,
    baseline: dict[str, str] | None = None,
    resolve: float = 0.01,
    named_baseline: dict[str, str] | None = None,
    fork_painters: bool = False,
) -> str:
    """Writes summary.csv/.md/.tex (and figures/) into `out`; returns the markdown table.
    `named_baseline`: the keys the user gave `--baseline`, each checked against these runs first.
    `fork_painters`: draw the figures in forked children (only a single-threaded caller: `paint`)."""
    runs, incomplete, skipped = find_runs(paths)
    for job in incomplete:
        log.warning("skipped incomplete job folder (no metrics.json): %s", job)
    if not runs:
        raise SystemExit(f"error: no readable metrics.json below {', '.join(map(str, paths))}")
    df = runs_table(runs)
    varying = [k for k in varying_keys(df) if k not in REPEAT_KEYS]
    keys = by if by else varying
    unknown = [k for k in keys if k not in df.columns]
    if unknown:
        differ = ", ".join(varying)
        raise SystemExit(f"error: --by {unknown[0]}: not a config key of these runs; keys that differ: {differ}")
    known = figures.names(figures.in_summary())
    # null in every run of a multiclass sweep (the binary figures), without `shift` or `retrain`: no column
    when_set = [*figures.test_task_figures(), "shift_acc", "retrain_gain", "retrain_forgetting"]
    chosen = metrics or [m for m in figures.report_columns() if m not in when_set or df[m].notna().any()]
    bad = [m for m in chosen if m not in known]
    if bad:
        raise SystemExit(f"error: --metrics {bad[0]}: choose from {', '.join(known)}")
    if sort and sort not in [*chosen, *keys]:
        raise SystemExit(f"error: --sort {sort}: choose from {', '.join([*chosen, *keys])}")
    for key, value in (named_baseline or {}).items():
        if key not in df.columns:
            differ = ", ".join(varying)
            raise SystemExit(
                f"error: --baseline {key}={value}: not a config key of these runs; keys that differ: {differ}"
            )
        values = sorted({as_text(v) for v in df[key]})
        if as_text(value) not in values:
            raise SystemExit(f"error: --baseline {key}={value}: no run has it; {key} is one of {', '.join(values)}")
    measured, df = df, reliable_values(df)
    table = grouped(df, keys, chosen)
    if sort:
        column = f"{sort}_mean" if f"{sort}_mean" in table.columns else sort
        lower_first = sort in known and figures.figure(sort).higher_is_better is False
        table = table.sort_values(column, ascending=lower_first)
    busy, flagged = int(table["busy"].sum()), int(table["unreliable"].sum())
    flags = [c for c, n in (("busy", busy), ("unreliable", flagged)) if n]
    shown = table[[*keys, "status", "n", *flags, *chosen]]
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "summary.csv", measured.sort_values("run_dir").to_csv(index=False))
    markdown = shown.to_markdown(index=False, disable_numparse=True)
    notes = []
    if busy:
        notes.append(
            f"busy: {busy} run(s) ran while other processes used the CPUs they left idle; their figures held "
            "and are counted"
        )
    if flagged:
        notes.append(
            f"unreliable: {flagged} run(s) with a speed or energy figure whose estimator could not hold; those "
            "values are left out of the means, deltas and figures (docs/shared-machines.md)"
        )
    markdown += "".join(f"\n\n{note}." for note in notes)
    if df["cv_folds"].notna().any():
        markdown += (
            "\n\ncross-validated rows: one seed shows the mean ± sd over its folds (n = folds); repeated "
            "seeds show the mean of the fold means ± sd over seeds (n = seeds x folds)."
        )
    footnote = energy_footnote(df)
    if footnote and any(figures.figure(m).unit in figures.ENERGY_UNITS for m in chosen):
        markdown += f"\n\n{footnote}"
    hidden = [k for k in varying if k not in keys]
    if hidden:
        markdown += f"\n\nRows group runs by {', '.join(keys) or 'nothing'} only; within a row these also differ: "
        markdown += ", ".join(hidden) + "."
    if len(keys) == 2:
        pivot = table[table["status"] == "ok"].pivot(index=keys[0], columns=keys[1], values=chosen[0])
        markdown += f"\n\n{chosen[0]} (rows {keys[0]}, columns {keys[1]}):\n\n{pivot.to_markdown()}"
    markdown += "".join(f"\n\n{line}" for line in optuna_best(paths, df))
    ablation, long, results, seeds_wanted = ablation_tables(df, keys, chosen, baseline or default_baseline(), resolve)
    markdown += f"\n\n{ablation}"
    markdown += grow_note(paths, df, seeds_wanted)
    savings = early_stopping_savings(df, keys)
    if savings:
        markdown += f"\n\n{savings}"
    served = deploy_table(df, keys)
    if served:
        markdown += f"\n\n{served}"
    ok = df[df["status"] == "ok"]
    if scored_corruptions(df):
        base, _ = find_baseline(ok, keys, baseline or default_baseline())
        if base is not None or not [k for k in keys if k != "trial"]:
            out.mkdir(parents=True, exist_ok=True)
            markdown += "\n\n" + robustness_section(ok, keys, base or (), out, resolve)
    if long:
        import pandas as pd

        write_atomic(out / "deltas.csv", pd.DataFrame(long).to_csv(index=False))
        write_atomic(out / "best.tex", best_table_tex(ok, keys, list(results)))
    if skipped:
        markdown += f"\n\nSkipped {len(skipped)} unreadable or malformed metrics.json (see the warnings):\n\n"
        markdown += "\n".join(f"- {line}" for line in skipped)
    previous = out / "summary.md"
    if previous.exists() and previous.read_text() != markdown + "\n":
        log.warning("replacing the report in %s, whose content differs", out)
    write_atomic(out / "summary.md", markdown + "\n")
    latex = shown.to_latex(index=False, escape=True)
    comments = list(notes)
    comments += [footnote] if footnote else []
    write_atomic(out / "summary.tex", latex + "".join(f"% {line}\n" for line in comments))
    if plots:
        write_figures(df, keys, out / "figures", (results, keys) if results else None, fork_painters)
    return markdown
