"""Serving cost: int8, pruning, ONNX Runtime, latency percentiles and the load test, on real runs."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from expframe.cli import deploy as cli
from expframe.config.validate import validate
from expframe.errors import ConfigError
from tests.conftest import make_cfg, run_like_hydra

FAST = (
    "deploy=cpu",
    "deploy.warmup_calls=5",
    "deploy.timed_calls=30",
    "deploy.throughput_calls=2",
    "deploy.concurrency=[1,2]",
    "deploy.load_seconds=0.05",
)


@pytest.fixture(scope="module")
def wide_run(tmp_path_factory):
    """A wide MLP (64-512-512-10), where int8 weights dominate the file."""
    run = tmp_path_factory.mktemp("deploy") / "wide"
    metrics = run_like_hydra(run, "dataset=digits", "epochs=2", "model.width=512", "model.depth=2", *FAST)
    return run, metrics, json.loads((run / "deploy.json").read_text())["variants"]


def test_every_variant_is_scored_and_timed(wide_run):
    _, metrics, served = wide_run
    assert list(served) == ["fp32", "int8_dynamic", "pruned_0.5", "pruned_0.9", "onnx_fp32", "onnx_int8"]
    for name, entry in served.items():
        assert 0 < entry["p50_ms"] <= entry["p95_ms"] <= entry["p99_ms"], name
        assert entry["throughput_samples_per_s"] > 0 and entry["test_acc"] > 0.1, name
        if name != "pruned_0.9":  # nine weights in ten gone from a 2-epoch model: near chance, honestly
            assert entry["test_acc"] > 0.5, name
        assert metrics[f"deploy_{name}_p95_ms"] == entry["p95_ms"]
    assert served["fp32"]["test_acc"] == metrics["test_acc"], "the reference is the trained model"
    assert metrics["time_breakdown"]["deploy_s"] > 0


def test_onnx_runtime_agrees_with_torch(wide_run):
    _, _, served = wide_run
    assert served["onnx_fp32"]["max_abs_logit_diff"] <= 1e-4 and served["onnx_fp32"]["agreement"] == 1.0
    assert served["onnx_fp32"]["test_acc"] == served["fp32"]["test_acc"]
    assert abs(served["onnx_int8"]["test_acc"] - served["fp32"]["test_acc"]) < 0.02


def test_int8_shrinks_a_wide_mlp_and_pruning_leaves_a_tenth(wide_run):
    _, _, served = wide_run
    assert served["int8_dynamic"]["size_bytes"] <= 0.3 * served["fp32"]["size_bytes"]
    assert served["onnx_int8"]["size_bytes"] <= 0.3 * served["onnx_fp32"]["size_bytes"]
    assert served["pruned_0.9"]["nonzero_fraction"] <= 0.10
    assert served["pruned_0.9"]["size_bytes"] >= served["fp32"]["size_bytes"], "dense storage does not shrink"
    assert served["pruned_0.9"]["compressed_bytes"] < 0.5 * served["fp32"]["compressed_bytes"]


def test_the_onnx_file_is_one_checked_file_with_a_dynamic_batch(wide_run):
    run, _, _ = wide_run
    files = sorted(p.name for p in (run / "deploy").iterdir())
    assert files == ["model.int8.onnx", "model.onnx"], "no external .data file"
    onnx.checker.check_model(str(run / "deploy" / "model.onnx"))
    session = ort.InferenceSession(str(run / "deploy" / "model.onnx"), providers=["CPUExecutionProvider"])
    for batch in (1, 7):
        (logits,) = session.run(None, {"x": np.zeros((batch, 1, 8, 8), np.float32)})
        assert logits.shape == (batch, 10)


def test_the_load_test_reports_each_concurrency_level(wide_run):
    _, _, served = wide_run
    for name in ("onnx_fp32", "onnx_int8"):
        load = served[name]["load"]
        assert [level["clients"] for level in load] == [1, 2]
        assert all(level["requests_per_s"] > 0 and level["p50_ms"] <= level["p99_ms"] for level in load)


def test_a_cnn_deploys_with_its_convolutions_left_fp32(tmp_path):
    metrics = run_like_hydra(tmp_path / "cnn", "dataset=digits", "epochs=1", "model=cnn", *FAST)
    served = json.loads((tmp_path / "cnn" / "deploy.json").read_text())["variants"]
    assert "Conv layers stay fp32" in served["int8_dynamic"]["note"]
    assert served["onnx_fp32"]["max_abs_logit_diff"] <= 1e-4
    assert metrics["deploy_onnx_int8_agreement"] >= 0.9
    assert abs(metrics["deploy_onnx_int8_test_acc"] - metrics["deploy_fp32_test_acc"]) <= 0.05


def test_the_report_has_a_serving_table_and_figure(wide_run, tmp_path):
    from expframe.report.summary import report

    run, _, served = wide_run
    md = report([run], tmp_path / "out")
    table = md.split("Serving cost")[1]
    assert "| onnx_int8 | 1 |" in table and f"{served['onnx_int8']['test_acc']:.4f}" in table
    assert (tmp_path / "out" / "figures" / "deploy.png").stat().st_size > 10_000


def test_expframe_deploy_on_a_trained_run(wide_run, capsys):
    run, _, _ = wide_run
    cli.main([str(run), "--variants", "fp32", "onnx_fp32"])
    printed = capsys.readouterr().out
    assert "onnx_fp32" in printed and "p95=" in printed
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["deploy_onnx_fp32_agreement"] == 1.0


@pytest.mark.parametrize("damage", ["missing", "corrupt", "variant"])
def test_expframe_deploy_refuses_bad_input_in_one_line(wide_run, tmp_path, damage):
    run, _, _ = wide_run
    target = tmp_path / "copy"
    target.mkdir()
    (target / ".hydra").mkdir()
    (target / ".hydra" / "config.yaml").write_text((run / ".hydra" / "config.yaml").read_text())
    (target / "metrics.json").write_text((run / "metrics.json").read_text())
    args = [str(target)]
    if damage == "corrupt":
        (target / "model.pt").write_bytes(b"PK\x03\x04 not a zip")
    elif damage == "variant":
        (target / "model.pt").write_bytes((run / "model.pt").read_bytes())
        args += ["--variants", "fp16"]
    with pytest.raises(SystemExit) as stop:
        cli.main(args)
    message = str(stop.value.code)
    assert message.startswith("error: ") and "\n" not in message
    expected = {"missing": "has no model.pt", "corrupt": "unreadable model.pt", "variant": "deploy.variants='fp16'"}
    assert expected[damage] in message


def test_bad_deploy_settings_name_the_key():
    with pytest.raises(ConfigError, match="deploy.variants='fp16': is not a variant"):
        validate(make_cfg("deploy=cpu", "deploy.variants=[fp32,fp16]", "device=cpu"))
    with pytest.raises(ConfigError, match="deploy.prune_amounts"):
        validate(make_cfg("deploy=cpu", "deploy.prune_amounts=[1.5]", "device=cpu"))
    with pytest.raises(ConfigError, match="deploy.concurrency"):
        validate(make_cfg("deploy=cpu", "deploy.concurrency=[0]", "device=cpu"))
