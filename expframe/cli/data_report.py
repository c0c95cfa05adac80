"""`expframe-data dataset=NAME [dataset.KEY=VALUE ...] [seed=N]`: know the data before training on it.

Composed like `train.py` (the same `dataset=` group and keys, checked by the same rules), it cuts the
splits as a run with that seed would and writes a report folder: summary.md, data.json, the
class-distribution figure, a seeded grid of samples per class, the copies found across splits side
by side, and the same as TensorBoard text and images, so the data sit beside the runs. It prints a
short summary; a leak across splits is a warning there and in every run trained on these data.
The default folder is `runs/data/<dataset>/<time>/` (`--out` chooses another, new or empty).
"""

import argparse
import datetime
import json
import logging
import shlex
import sys
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from expframe import PROJECT_ROOT
from expframe.build import build
from expframe.cli.arguments import OneLineParser
from expframe.cli.entry import USER_ERRORS, one_line
from expframe.config.added_keys import check_added_keys
from expframe.config.output_folders import check_output_folder
from expframe.config.validate import check_data_size, check_rules, check_shape
from expframe.data import profile
from expframe.data.raw import RawSplits
from expframe.errors import ConfigError
from expframe.record.atomic import write_atomic
from expframe.report import data_summary
from expframe.train.losses import class_weights

REPORT_FILE = "data.json"
SUMMARY_FILE = "summary.md"
CLASSES_FIGURE = "class_distribution.png"
SAMPLES_FIGURE = "samples.png"
COPIES_FIGURE = "copies_across_splits.png"
# what expframe-data composes: the data set and the seed that cuts its validation split
TAKEN = ("dataset", "seed")


def samples_per_class(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 64:
        raise argparse.ArgumentTypeError(f"{text!r} must be an integer from 1 to 64")
    return int(text)


def check_overrides(overrides: list[str]) -> None:
    for override in overrides:
        key = override.lstrip("+~").split("=", 1)[0]
        if "=" not in override or not (key in TAKEN or key.startswith("dataset.")):
            raise ConfigError(
                "override", override, "must set dataset=NAME, dataset.KEY=VALUE or seed=N (what cuts the data)"
            )


def check_data_settings(cfg: DictConfig) -> None:
    """train.py's rules for the keys expframe-data reads (the data set's and the seed's)."""
    check_rules(cfg)
    check_shape(cfg)
    check_data_size(cfg.dataset)


def compose_config(overrides: list[str]) -> DictConfig:
    from hydra import compose, initialize_config_dir

    check_overrides(overrides)
    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf")):
        cfg = compose("train", overrides, return_hydra_config=True)
    check_added_keys(overrides, dict(cfg.hydra.runtime.choices))
    return cfg


def output_folder(out: str | None, name: str) -> Path:
    if out is None:
        stamp = datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
        return Path("runs") / "data" / name / stamp
    path = check_output_folder("--out", out)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ConfigError("--out", out, "holds files already; a data report writes a new or empty folder")
    return path


def analyse(cfg: DictConfig, per_class: int) -> tuple[dict, dict]:
    """data.json's values, and the images its figures show."""
    raw = build(cfg.dataset.source)
    splits = profile.run_splits(raw, cfg.dataset.val_fraction, cfg.seed)
    names = profile.class_names(raw)
    weights, unweighable = None, None
    try:
        balanced = OmegaConf.create({"class_weights": "balanced"})
        weights = dict(zip(names, class_weights(balanced, raw.train_y[splits.train], raw.num_classes), strict=True))
    except ConfigError as e:  # a class without training samples: reported, not fatal here
        unweighable = e.allowed
    declared = [list(cfg.dataset.input_shape), cfg.dataset.num_classes]
    loaded = [list(raw.train_x.shape[1:]), raw.num_classes]
    report = {
        "dataset": {
            "name": cfg.dataset.name,
            "settings": OmegaConf.to_container(cfg.dataset, resolve=True),
            "seed": cfg.seed,
            "split_rule": (
                "train, val/ and test/ as the folders hold them"
                if raw.val_size
                else f"val = a seeded {cfg.dataset.val_fraction:g} of the training pool, test as given"
            ),
            "declared_matches": declared == loaded,
        },
        "class_names": names,
        "classes": profile.class_counts(raw, splits),
        "chance_accuracy": 1 / raw.num_classes,
        "class_weights_balanced": weights,
        "class_weights_unweighable": unweighable,
        "images": {**profile.image_facts(raw), "per_split": profile.split_statistics(raw, splits)},
        "bad_files": profile.bad_files(raw),
        "duplicates": profile.copies(raw, splits),
    }
    if declared != loaded:
        report["dataset"]["mismatch"] = (
            f"dataset.input_shape={declared[0]} and num_classes={declared[1]} are declared; the data hold "
            f"{loaded[0]} and {loaded[1]} classes: a run would stop until they agree"
        )
    shown = {"samples": {}, "copies": []}
    if raw.layout == "NCHW":
        shown["samples"] = {k: v.numpy() for k, v in profile.samples(raw, splits, per_class, cfg.seed).items()}
        shown["copies"] = copy_pairs(raw, report["duplicates"]["groups"])
    return report, shown


def copy_pairs(raw: RawSplits, groups: list[dict]) -> list[tuple]:
    """The first copies across splits as (label, image, label, image), for the side-by-side figure."""
    pairs = []
    for group in (g for g in groups if len(g["splits"]) > 1):
        first = group["members"][0]
        second = next(m for m in group["members"] if m["split"] != first["split"])
        pair = []
        for member in (first, second):
            image = profile.pixels(raw, member["split"], torch.tensor([member["row"]]))[0].numpy()
            pair += [f"{member['split']}: {member['file']}", image]
        pairs.append(tuple(pair))
        if len(pairs) == data_summary.SHOWN_COPIES:
            break
    return pairs


def write_report(out: Path, report: dict, shown: dict) -> None:
    """Every file, then the TensorBoard events (text and images) in the same folder."""
    from torch.utils.tensorboard import SummaryWriter

    out.mkdir(parents=True, exist_ok=True)
    text = data_summary.markdown(report)
    write_atomic(out / REPORT_FILE, json.dumps(report, indent=2, allow_nan=False).encode())
    write_atomic(out / SUMMARY_FILE, text.encode())
    with SummaryWriter(log_dir=str(out)) as writer:
        writer.add_text("data/summary", text)
        figure = data_summary.class_figure(report, out / CLASSES_FIGURE)
        writer.add_image("data/class_distribution", figure, dataformats="HWC")
        if shown["samples"]:
            figure = data_summary.sample_figure(shown["samples"], out / SAMPLES_FIGURE)
            writer.add_image("data/samples", figure, dataformats="HWC")
        if shown["copies"]:
            figure = data_summary.copies_figure(shown["copies"], out / COPIES_FIGURE)
            writer.add_image("data/copies_across_splits", figure, dataformats="HWC")


def main(argv: list[str] | None = None) -> None:
    parser = OneLineParser(prog="expframe-data", description=__doc__.split("\n")[0])
    parser.add_argument("overrides", nargs="*", help="dataset=NAME, dataset.KEY=VALUE, seed=N (as train.py takes them)")
    parser.add_argument("--out", help="the report's folder, new or empty (default runs/data/<dataset>/<time>)")
    parser.add_argument("--samples", type=samples_per_class, default=8, help="images per class, 1-64 (default 8)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s", stream=sys.stderr)
    start = time.perf_counter()
    try:
        cfg = compose_config(args.overrides)
        check_data_settings(cfg)
        out = output_folder(args.out, cfg.dataset.name)
        report, shown = analyse(cfg, args.samples)
    except USER_ERRORS as e:
        raise SystemExit(f"error: {one_line(e)}") from None
    report["command"] = shlex.join(["expframe-data", *(argv if argv is not None else sys.argv[1:])])
    report["seconds"] = time.perf_counter() - start
    write_report(out, report, shown)
    for line in data_summary.short_summary(report):
        print(line)
    if "mismatch" in report["dataset"]:
        print(f"WARNING: {report['dataset']['mismatch']}")
    print(f"report in {time.perf_counter() - start:.2f} s -> {out}")


if __name__ == "__main__":
    main()
