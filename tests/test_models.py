"""The model contract, weight init on every layer kind, the loss group and the data layout."""

import math

import pytest
import torch
from torch import nn

from expframe.build import build
from expframe.data import DeviceData, load
from expframe.errors import ConfigError
from expframe.models import ModelInputs, apply_init, build_model, initialised_layers
from expframe.train.losses import build_loss
from expframe.train.run import train
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


def initial_weights(*overrides: str) -> list[torch.Tensor]:
    cfg = make_cfg(*overrides)
    torch.manual_seed(0)
    net = build_model(cfg.model, cfg.activation, cfg.init, ModelInputs((1, 28, 28), 10))
    return [m.weight.detach().clone() for m in initialised_layers(net)]


@pytest.mark.parametrize("init", ["kaiming", "xavier", "orthogonal"])
def test_the_init_gain_follows_the_activation(init):
    relu, tanh = initial_weights(f"init={init}", "activation=relu"), initial_weights(f"init={init}", "activation=tanh")
    assert not torch.equal(relu[0], tanh[0]), "same seed, another activation: another gain"
    gain = {"relu": math.sqrt(2), "tanh": 5 / 3}
    if init == "kaiming":  # std = gain / sqrt(fan_in)
        assert relu[0].std().item() == pytest.approx(gain["relu"] / math.sqrt(784), rel=0.05)
        assert tanh[0].std().item() == pytest.approx(gain["tanh"] / math.sqrt(784), rel=0.05)
    if init == "xavier":  # uniform with bound gain * sqrt(6 / (fan_in + fan_out))
        assert tanh[0].abs().max().item() == pytest.approx(gain["tanh"] * math.sqrt(6 / (784 + 128)), rel=0.01)
    default_relu, default_tanh = initial_weights("activation=relu"), initial_weights("activation=tanh")
    assert all(torch.equal(a, b) for a, b in zip(default_relu, default_tanh, strict=True)), "PyTorch's own init"


def test_leaky_relu_passes_its_slope_to_kaiming():
    from expframe.models.init import for_activation

    init = for_activation(build(make_cfg("init=kaiming").init.weight), nn.LeakyReLU(0.2))
    assert init.keywords["nonlinearity"] == "leaky_relu" and init.keywords["a"] == 0.2


def one_step_gradients(activation: str) -> list[torch.Tensor]:
    cfg = make_cfg("init=zeros", f"activation={activation}", "model.depth=2")
    net = build_model(cfg.model, cfg.activation, cfg.init, ModelInputs((1, 8, 8), 10))
    data = load(make_cfg("dataset=digits").dataset, torch.device("cpu"))
    nn.functional.cross_entropy(net(data.train_x[:64]), data.train_y[:64]).backward()
    return [m.weight.grad for m in initialised_layers(net)]


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_zero_init_with_f0_zero_gives_all_zero_weight_gradients(activation):
    assert all(g.abs().sum() == 0 for g in one_step_gradients(activation))


def test_zero_init_with_sigmoid_moves_the_weights_but_keeps_the_hidden_units_identical(tmp_path):
    run = train(
        make_cfg("dataset=digits", "init=zeros", "activation=sigmoid", "epochs=3", "optimizer=sgd_momentum"), tmp_path
    )
    hidden = initialised_layers(run.model)[0].weight.detach()
    assert hidden.abs().sum() > 0, "the weights move"
    assert torch.allclose(hidden, hidden[0].expand_as(hidden)), "every hidden unit stays a copy of the first"
