"""expframe-deploy --pipeline: the optimisation chain on a trained ViT, its table computed from its
own measured figures, its predictions agreeing with eager fp32, its targets judged."""

import json

import numpy as np
import pandas as pd
import pytest

from expframe.deploy.pipeline import FIGURE_FILE, REPORT_FILE, precision
from tests.conftest import run_train_in_process

STEPS = ["eager_fp32", "onnx_fp32", "onnx_int8", "onnx_int8_tuned"]


@pytest.fixture(scope="module")
def vit_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("pipeline") / "run"
    done = run_train_in_process(
        "dataset=digits",
        "model=vit",
        "model.patch_size=4",
        "optimizer=adam",
        "optimizer.lr=0.003",
        "epochs=3",
        "energy.track=false",
        f"hydra.run.dir={run}",
    )
    assert done.returncode == 0, done.stderr
    return run


def small(chosen):
    chosen.timed_calls, chosen.warmup_calls, chosen.throughput_calls = 30, 5, 3
    chosen.pipeline.batch_sizes = [1, 16]
    return chosen


def test_the_chain_is_measured_and_its_reductions_come_from_its_own_figures(vit_run, capsys):
    from expframe.cli.deploy import pipeline_run, print_pipeline, settings

    chosen = small(settings(None))
    result = pipeline_run(vit_run, chosen)
    print_pipeline(result, vit_run)
    table = pd.read_csv(vit_run / "deploy" / REPORT_FILE)
    assert list(table["step"]) == STEPS and (table["device"] == "cpu").all()
    assert (vit_run / "deploy" / FIGURE_FILE).stat().st_size > 10_000
    eager = table.iloc[0]
    assert eager["agreement"] == 1 and table.iloc[1]["agreement"] >= 0.99, "ONNX fp32 predicts as eager fp32"
    assert table.iloc[2]["agreement"] >= 0.95 and table.iloc[3]["agreement"] == table.iloc[2]["agreement"]
    assert np.allclose(table["time_reduction"], 1 - table["p50_ms"] / eager["p50_ms"])
    cost = chosen.pipeline.price_per_hour * table["threads"] / result["cpus"] / 3600 / table["samples_per_s"] * 1e6
    assert np.allclose(table["usd_per_million"], cost)
    assert np.allclose(table["cost_reduction"], 1 - table["usd_per_million"] / eager["usd_per_million"])
    assert np.allclose(table["accuracy_change"], table["accuracy"] - eager["accuracy"])
    tried = {(t["threads"], t["batch"]) for t in result["trials"]}
    assert (chosen.threads, chosen.throughput_batch) in tried and (1, 16) in tried
    assert (table.iloc[3]["threads"], table.iloc[3]["batch"]) in tried
    judged = {(t["step"], t["target"]): t for t in result["targets"]}
    assert len(judged) == 9
    speedup = judged["onnx_fp32", "batch-1 speed-up over eager fp32"]
    assert speedup["measured"] == pytest.approx(eager["p50_ms"] / table.iloc[1]["p50_ms"])
    assert speedup["met"] == (speedup["measured"] >= 1.5)
    size = judged["onnx_int8", "size reduction (x)"]
    assert size["measured"] == pytest.approx(eager["size_mb"] / table.iloc[2]["size_mb"])
    printed = capsys.readouterr().out
    assert printed.count("target ") == 9 and "GPU rows skipped: no CUDA device" in printed


def test_precision_is_the_positive_class_for_two_classes_and_the_mean_otherwise():
    predicted, truth = np.array([1, 1, 1, 0, 0, 1]), np.array([1, 0, 1, 0, 1, 1])
    assert precision(predicted, truth, 1, 2) == 0.75
    assert precision(predicted, truth, None, 2) == pytest.approx((0.5 + 0.75) / 2)
    assert precision(np.array([0, 0]), np.array([1, 0]), 1, 2) == 0.0, "nothing flagged: no precision to claim"


def test_a_bad_pipeline_setting_is_one_line(vit_run):
    from omegaconf import open_dict

    from expframe.cli.deploy import pipeline_run, settings
    from expframe.errors import ConfigError

    for key, value, words in (
        ("batch_sizes", [0], "deploy.pipeline.batch_sizes"),
        ("threads", [], "deploy.pipeline.threads"),
        ("price_per_hour", -1, "deploy.pipeline.price_per_hour"),
    ):
        chosen = small(settings(None))
        with open_dict(chosen):
            chosen.pipeline[key] = value
        with pytest.raises(ConfigError) as refused:
            pipeline_run(vit_run, chosen)
        assert str(refused.value).startswith(words)
    assert json.loads((vit_run / "metrics.json").read_text())["status"] == "ok"


@pytest.mark.slow
def test_the_docs_pipeline_commands_run_as_written(vit_run, capsys):
    """Every `expframe-deploy ... --pipeline` line of the docs' bash blocks, on a trained tiny ViT."""
    import re
    import shlex

    from expframe.cli.deploy import main
    from tests.support.documentation import documentation

    blocks = re.findall(r"```bash\n(.*?)```", documentation(), flags=re.S)
    commands = [line.strip() for b in blocks for line in b.splitlines() if line.startswith("expframe-deploy ")]
    commands = [c for c in commands if "--pipeline" in c]
    assert commands, "the docs show the pipeline"
    for command in commands:
        args = [a if a.startswith("-") or a.isdigit() else str(vit_run) for a in shlex.split(command)[1:]]
        main(args)
        assert f"-> {vit_run / 'deploy' / REPORT_FILE}" in capsys.readouterr().out
