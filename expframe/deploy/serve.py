"""What a trained model costs to serve: `deploy(model, test_x, test_y, settings, out_dir)` builds the
configured variants, scores and times each on the CPU, writes deploy.json and returns the figures
flattened for metrics.json (`deploy_<variant>_<figure>`).

The eager fp32 model is the reference every other variant is compared with (agreement of the
predicted classes, largest logit difference), measured first even when it is not listed.
"""

import copy
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

from expframe.deploy import latency as timing
from expframe.deploy import variants
from expframe.errors import ConfigError
from expframe.record.atomic import write_json
from expframe.record.files import DEPLOY_FILE

SCORE_BATCH = 256


def check_settings(settings: DictConfig) -> None:
    unknown = [v for v in settings.variants if v not in variants.KINDS]
    if unknown:
        raise ConfigError("deploy.variants", unknown[0], f"is not a variant; choose from {', '.join(variants.KINDS)}")
    if not settings.variants:
        return
    amounts = list(settings.prune_amounts)
    if ("pruned" in settings.variants and not amounts) or any(not 0 < float(a) < 1 for a in amounts):
        raise ConfigError("deploy.prune_amounts", amounts, "must be a non-empty list of fractions in (0, 1)")
    for key in ("threads", "warmup_calls", "timed_calls", "throughput_batch", "throughput_calls"):
        value = settings[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"deploy.{key}", value, "must be an integer >= 1")
    levels = list(settings.concurrency)
    if any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in levels):
        raise ConfigError("deploy.concurrency", levels, "must be a list of integers >= 1 (client threads)")


def build(model: nn.Module, sample: torch.Tensor, settings: DictConfig, folder: Path) -> list[variants.Variant]:
    wanted = list(settings.variants)
    built = [variants.fp32(model)]
    if "int8_dynamic" in wanted:
        built.append(variants.int8_dynamic(model))
    if "pruned" in wanted:
        built += [variants.pruned(model, float(a)) for a in settings.prune_amounts]
    if "onnx_fp32" in wanted or "onnx_int8" in wanted:
        folder.mkdir(parents=True, exist_ok=True)
        fp32_file = folder / "model.onnx"
        variants.export_onnx(model, sample, fp32_file)
        if "onnx_fp32" in wanted:
            built.append(variants.onnx_session(fp32_file, settings.threads, "onnx_fp32"))
        if "onnx_int8" in wanted:
            built.append(variants.onnx_int8(fp32_file, folder / "model.int8.onnx", settings.threads))
    return built


def scores(predict: variants.Predict, x: np.ndarray) -> np.ndarray:
    return np.concatenate([predict(x[i : i + SCORE_BATCH]) for i in range(0, len(x), SCORE_BATCH)])


def measure(variant: variants.Variant, x: np.ndarray, y: np.ndarray, reference: np.ndarray, settings) -> dict:
    logits = scores(variant.predict, x)
    predicted = logits.argmax(1)
    speed, flagged = timing.timed(
        lambda: {
            **timing.latency(variant.predict, x, settings.warmup_calls, settings.timed_calls),
            "throughput_samples_per_s": timing.throughput(
                variant.predict, x, settings.throughput_batch, settings.throughput_calls
            ),
        },
        settings.threads,
    )
    entry = {
        "size_bytes": variant.size_bytes,
        "compressed_bytes": variant.compressed_bytes,
        "nonzero_fraction": variant.nonzero_fraction,
        "test_acc": int((predicted == y).sum()) / len(y),
        "agreement": int((predicted == reference.argmax(1)).sum()) / len(y),
        "max_abs_logit_diff": float(np.abs(logits - reference).max()),
        **speed,
        "timing_contended": flagged,
        "note": variant.note,
    }
    if variant.session is not None and settings.concurrency:
        load, loaded_flag = timing.timed(
            lambda: [timing.load_test(variant.session, x, c, settings.load_seconds) for c in settings.concurrency],
            max(settings.concurrency),
        )
        entry["load"], entry["timing_contended"] = load, flagged or loaded_flag
    return entry


def deploy(net: nn.Module, test_x: torch.Tensor, test_y: torch.Tensor, settings: DictConfig, out_dir: Path) -> dict:
    """deploy.json in out_dir; returns the flattened figures and `deploy_time_s`."""
    start = time.perf_counter()
    model = copy.deepcopy(net).cpu().float().eval()
    x = test_x.detach().cpu().float().contiguous().numpy()
    y = test_y.detach().cpu().numpy()
    previous = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    try:
        built = build(model, torch.from_numpy(x[:2]), settings, out_dir / "deploy")
        reference = scores(built[0].predict, x)
        results = {v.name: measure(v, x, y, reference, settings) for v in built}
    finally:
        torch.set_num_threads(previous)
    write_json(out_dir / DEPLOY_FILE, {"threads": settings.threads, "samples": len(y), "variants": results})
    flat = {
        f"deploy_{name}_{key}": value
        for name, entry in results.items()
        for key, value in entry.items()
        if isinstance(value, int | float) and not isinstance(value, bool) or key == "timing_contended"
    }
    return {**flat, "deploy_time_s": time.perf_counter() - start}
