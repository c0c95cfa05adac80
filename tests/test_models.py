"""The model contract, weight init on every layer kind, the loss group and the data layout."""

import math

import pytest
import torch
from torch import nn

from expframe.build import build
from expframe.data import DeviceData, load
from expframe.errors import ConfigError
from expframe.losses import build_loss
from expframe.models import ModelInputs, apply_init, build_model, initialised_layers
from tests.conftest import CONF, make_cfg, trained

INITS = sorted(p.stem for p in (CONF / "init").glob("*.yaml"))


def bias_free() -> nn.Module:
    """Layers built with bias=False, as every ResNet convolution is, beside normalisation layers."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, bias=False),
        nn.BatchNorm2d(8),
        nn.ConvTranspose2d(8, 4, 3, bias=False),
        nn.Conv1d(4, 4, 3, bias=False),
        nn.Flatten(),
        nn.Linear(16, 10, bias=False),
        nn.Linear(10, 10),
    )


@pytest.mark.parametrize("option", INITS)
def test_every_init_on_a_bias_free_model(option):
    init = make_cfg(f"init={option}").init
    torch.manual_seed(0)
    model = bias_free()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    apply_init(model, build(init.weight), build(init.bias))
    layers = initialised_layers(model)
    assert [type(m).__name__ for m in layers] == ["Conv2d", "ConvTranspose2d", "Conv1d", "Linear", "Linear"]
    bn = model[1]
    assert torch.equal(bn.weight, before["1.weight"]) and torch.equal(bn.bias, before["1.bias"]), "norm layers kept"
    changed = [
        not torch.equal(layer.weight, before[f"{i}.weight"]) for i, layer in zip((0, 2, 3, 5, 6), layers, strict=True)
    ]
    if option == "default":
        assert not any(changed)
    else:
        assert all(changed), option
    if option == "zeros":
        assert all(layer.weight.abs().sum() == 0 for layer in layers) and model[6].bias.abs().sum() == 0
    if option == "kaiming":
        assert model[5].weight.std().item() == pytest.approx(math.sqrt(2 / 16), rel=0.25)


def test_init_of_the_built_model_touches_linear_and_conv():
    cfg = make_cfg("model=cnn", "model.batchnorm=true", "init=zeros")
    net = build_model(cfg.model, cfg.activation, cfg.init, ModelInputs((1, 28, 28), 10))
    assert {type(m).__name__ for m in initialised_layers(net)} == {"Conv2d", "Linear"}
    assert all(m.weight.abs().sum() == 0 for m in initialised_layers(net))
    assert all(m.weight.eq(1).all() for m in net.modules() if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d))


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")
def test_a_model_that_cannot_take_the_inputs_is_one_config_error():
    cfg = make_cfg("model=cnn")
    with pytest.raises(ConfigError, match=r"model='expframe.models.CNN': cannot take inputs shaped \(1, 2, 2\)"):
        build_model(cfg.model, cfg.activation, cfg.init, ModelInputs((1, 2, 2), 10))


def test_the_contract_check_leaves_weights_and_statistics_alone():
    cfg = make_cfg("model.batchnorm=true", "model.dropout=0.5")
    torch.manual_seed(3)
    net = build_model(cfg.model, cfg.activation, cfg.init, ModelInputs((1, 28, 28), 10))
    after_build = torch.rand(1)
    torch.manual_seed(3)
    reference = build(cfg.model, input_shape=(1, 28, 28), num_classes=10, activation=build(cfg.activation))
    assert torch.rand(1) == after_build, "the check draws no random numbers"
    for (name, a), b in zip(net.state_dict().items(), reference.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert net.training


def test_the_loss_group_is_used_for_training_and_evaluation(tmp_path):
    plain = trained(make_cfg("dataset=digits", "epochs=3", "optimizer=adam"), tmp_path / "plain")
    smooth = trained(
        make_cfg("dataset=digits", "epochs=3", "optimizer=adam", "loss.label_smoothing=0.5"), tmp_path / "smooth"
    )
    assert plain["init_hash"] == smooth["init_hash"]
    assert smooth["final_train_loss"] > plain["final_train_loss"] + 0.3
    assert smooth["final_val_loss"] > plain["final_val_loss"] + 0.3


def test_class_weights_are_checked_against_the_classes():
    loss = make_cfg("+loss.weight=[1,2]").loss
    with pytest.raises(ConfigError, match=r"loss.weight=.*: must be null or a list of 10 non-negative numbers"):
        build_loss(loss, 10, torch.device("cpu"))
    weighted = build_loss(make_cfg(f"loss.weight=[{','.join(['1'] * 9)},5]").loss, 10, torch.device("cpu"))
    logits, y = torch.zeros(2, 10), torch.tensor([0, 9])
    assert weighted(logits, y).item() == pytest.approx(math.log(10))
    assert weighted.weight.tolist() == [1.0] * 9 + [5.0]


def test_cross_entropy_is_named_only_in_the_loss_group():
    package = CONF.parent / "expframe"
    mentions = [p for p in package.rglob("*.py") if "cross_entropy" in p.read_text() or "CrossEntropy" in p.read_text()]
    assert mentions == []
    assert make_cfg().loss._target_ == "torch.nn.CrossEntropyLoss"


def test_feature_vectors_are_normalised_per_feature():
    cfg = make_cfg(
        "dataset=synthetic", "dataset.source.shape=[12]", "dataset.source.n_train=500", "dataset.source.n_test=50"
    )
    data: DeviceData = load(cfg.dataset, torch.device("cpu"))
    assert data.layout == "NF" and data.input_shape == (12,)
    assert data.train_x.mean(0).abs().max() < 1e-5 and (data.train_x.std(0) - 1).abs().max() < 1e-4
    images = load(make_cfg("dataset=digits").dataset, torch.device("cpu"))
    assert images.layout == "NCHW" and images.train_x.mean().abs() < 1e-5


def test_a_run_on_feature_vectors_learns(tmp_path):
    cfg = make_cfg(
        "dataset=synthetic", "dataset.source.shape=[20]", "dataset.source.n_train=2000", "dataset.source.n_test=500",
        "epochs=3", "optimizer=adam",
    )  # fmt: skip
    assert trained(cfg, tmp_path)["test_acc"] > 0.5
