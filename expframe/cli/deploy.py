"""`expframe-deploy RUN_DIR [RUN_DIR ...]`: the serving benchmark for runs already trained, from
their model.pt and saved config; writes deploy.json and adds the figures to metrics.json. With
`--pipeline`: the optimisation practical's chain against its targets, RUN_DIR/deploy/optimization_report.csv."""

import json
import logging
import sys
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from expframe import PROJECT_ROOT
from expframe.cli.arguments import OneLineParser
from expframe.cli.finished_run import ModelSettings, load_run, restored_model
from expframe.data.device_data import load
from expframe.deploy.pipeline import REPORT_FILE, run_pipeline
from expframe.deploy.serve import check_settings, deploy
from expframe.deploy.variants import KINDS
from expframe.errors import ConfigError
from expframe.record.atomic import write_json
from expframe.record.files import DEPLOY_FILE, METRICS_FILE
from expframe.train.setup import model_inputs


def settings(variants: list[str] | None) -> DictConfig:
    """The project's `deploy=cpu` preset, its variants narrowed by --variants."""
    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf")):
        chosen = compose("train", ["deploy=cpu"]).deploy
    if variants:
        chosen.variants = variants
    check_settings(chosen)
    return chosen


def deploy_run(run_dir: Path, chosen: DictConfig) -> dict:
    cfg, metrics = load_run(run_dir)
    data = load(cfg.dataset, torch.device("cpu"))
    net = restored_model(run_dir, ModelSettings.of(cfg), model_inputs(data))
    served = deploy(net, data.test_x[:], data.test_y, chosen, run_dir)
    write_json(run_dir / METRICS_FILE, {**metrics, **served})
    return served


def pipeline_run(run_dir: Path, chosen: DictConfig) -> dict:
    cfg, metrics = load_run(run_dir)
    data = load(cfg.dataset, torch.device("cpu"))
    net = restored_model(run_dir, ModelSettings.of(cfg), model_inputs(data))
    positive = data.positive if data.num_classes == 2 else None
    return run_pipeline(net, data.test_x[:], data.test_y, positive, chosen, run_dir / "deploy")


def print_pipeline(result: dict, run_dir: Path) -> None:
    columns = ("step", "threads", "batch", "size_mb", "accuracy", "precision", "agreement", "p50_ms", "p95_ms")
    columns += ("p99_ms", "samples_per_s", "usd_per_million", "time_reduction", "cost_reduction")
    print(" | ".join(columns))
    for row in result["rows"]:
        print(" | ".join(_cell(row[c]) for c in columns) + (" (contended)" if row["timing_contended"] else ""))
    cpus = result["cpus"]
    print(f"cost: deploy.pipeline.price_per_hour for the machine's {cpus} CPU(s), shared by the cores a step uses")
    for target in result["targets"]:
        verdict = "met" if target["met"] else "missed"
        print(f"target {target['step']}: {target['target']} {_cell(target['measured'])} {target['goal']}: {verdict}")
    if result["gpu_skipped"]:
        print(f"GPU rows skipped: {result['gpu_skipped']}")
    for row in result["gpu"]:
        print(
            f"{row['step']}: p50 {row['p50_ms']:.3f} ms, {row['samples_per_s']:,.0f} samples/s "
            f"({row['throughput_vs_cpu_eager']:.1f}x eager fp32 on the CPU), accuracy {row['accuracy']:.4f}"
        )
    print(f"-> {run_dir / 'deploy' / REPORT_FILE}")


def _cell(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def main(argv: list[str] | None = None) -> None:
    parser = OneLineParser(prog="expframe-deploy", description=__doc__.split("\n")[0])
    parser.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR", help="run folders holding model.pt")
    parser.add_argument("--variants", nargs="+", help=f"a subset of {', '.join(KINDS)} (default: all)")
    parser.add_argument(
        "--pipeline", action="store_true", help="eager fp32 -> ONNX fp32 -> int8 -> tuned, against the targets"
    )
    for key in ("timed_calls", "warmup_calls", "throughput_batch", "throughput_calls"):
        parser.add_argument(f"--{key.replace('_', '-')}", type=int, metavar="N", help=f"deploy.{key} (a big model's)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", metavar="N", help="deploy.pipeline.batch_sizes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s", stream=sys.stderr)
    try:
        chosen = settings(args.variants)
        for key in ("timed_calls", "warmup_calls", "throughput_batch", "throughput_calls"):
            if getattr(args, key) is not None:
                chosen[key] = getattr(args, key)
        if args.batch_sizes:
            chosen.pipeline.batch_sizes = args.batch_sizes
        check_settings(chosen)
        if args.pipeline:
            for run_dir in args.run_dirs:
                print_pipeline(pipeline_run(run_dir, chosen), run_dir)
            return
        for run_dir in args.run_dirs:
            deploy_run(run_dir, chosen)
            summary = json.loads((run_dir / DEPLOY_FILE).read_text())["variants"]
            for name, entry in summary.items():
                print(
                    f"{name:<14} test_acc={entry['test_acc']:.4f} p95={entry['p95_ms']:.3f}ms "
                    f"size={entry['size_bytes']:,}B -> {run_dir}"
                )
    except ConfigError as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
