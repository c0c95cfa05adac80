"""compile, channels_last and the CUDA-only paths: what can run on a CPU runs here."""

import pytest
import torch

from expframe.train.loop import to_device
from tests.conftest import make_cfg, needs_cuda, trained


@pytest.mark.slow
def test_compiled_model_trains_from_the_same_weights(tmp_path):
    eager = trained(make_cfg("dataset=digits", "epochs=2", "optimizer=adam"), tmp_path / "eager")
    compiled = trained(make_cfg("dataset=digits", "epochs=2", "optimizer=adam", "compile=true"), tmp_path / "compiled")
    assert compiled["status"] == "ok" and compiled["init_hash"] == eager["init_hash"]
    assert compiled["test_acc"] == pytest.approx(eager["test_acc"], abs=0.05)


def test_channels_last_cnn_matches_the_default_layout(tmp_path):
    overrides = ("dataset=digits", "model=cnn", "epochs=2", "optimizer=adam", "model.batchnorm=true")
    nchw = trained(make_cfg(*overrides), tmp_path / "nchw")
    nhwc = trained(make_cfg(*overrides, "channels_last=true"), tmp_path / "nhwc")
    assert nhwc["init_hash"] == nchw["init_hash"]
    assert nhwc["final_train_loss"] == pytest.approx(nchw["final_train_loss"], rel=1e-3)


def test_host_tensors_stay_put_on_cpu():
    t = torch.arange(5)
    assert to_device(t, torch.device("cpu")).data_ptr() == t.data_ptr()


@needs_cuda
@pytest.mark.cuda
def test_index_transfer_to_cuda_is_pinned_and_correct():
    t = torch.randperm(1000)
    assert torch.equal(to_device(t, torch.device("cuda")).cpu(), t)


@needs_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("optimizer", ["sgd_momentum", "adam"])
def test_cuda_graph_step_trains_like_the_eager_step(tmp_path, optimizer):
    overrides = ("device=cuda", "epochs=2", f"optimizer={optimizer}", "batch_size=50")
    eager = trained(make_cfg(*overrides), tmp_path / "eager")
    graphed = trained(make_cfg(*overrides, "cuda_graphs=true"), tmp_path / "graphed")
    assert graphed["status"] == "ok" and graphed["init_hash"] == eager["init_hash"]
    assert graphed["final_train_loss"] == pytest.approx(eager["final_train_loss"], rel=1e-2)
    assert graphed["test_acc"] == pytest.approx(eager["test_acc"], abs=0.02)


@needs_cuda
@pytest.mark.cuda
def test_cuda_graphs_refuse_what_they_cannot_capture():
    from expframe.config.validate import validate
    from expframe.errors import ConfigError

    for extra in ("precision=fp16", "scheduler=cosine", "compile=true"):
        with pytest.raises(ConfigError, match="cuda_graphs"):
            validate(make_cfg("device=cuda", "cuda_graphs=true", extra))
