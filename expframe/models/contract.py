"""What a model family receives and must return: the contract every `model._target_` follows.

A family is any callable (usually an nn.Module class) named by `_target_` in conf/model/*.yaml. It is
called with keyword arguments only: the three below, which come from the data set and the
`activation` group, plus every other key of its YAML file (depth, width, channels, ...). It returns
an nn.Module that maps a batch shaped `(N, *input_shape)` to logits `(N, num_classes)`.
`build_model` checks that on a two-sample batch before any training, so a family that breaks the
contract fails in one line instead of inside the first step. A module with an `after_init()` method
has it called once the `init` group has run (a ResNet loads local weights there, so they win).
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from omegaconf import DictConfig
from torch import nn

from expframe.build import build
from expframe.errors import ConfigError, short_reason
from expframe.models.init import apply_init, for_activation

ActivationFactory = Callable[[], nn.Module]


@dataclass(frozen=True)
class ModelInputs:
    """input_shape: one sample's shape in the data set's layout (e.g. (1, 28, 28) for NCHW)."""

    input_shape: tuple[int, ...]
    num_classes: int


class ModelFamily(Protocol):
    def __call__(
        self, *, input_shape: tuple[int, ...], num_classes: int, activation: ActivationFactory, **hyper: Any
    ) -> nn.Module: ...


def replace_modules(module: nn.Module, kind: type[nn.Module], make: ActivationFactory) -> None:
    """Every `kind` submodule replaced by a fresh `make()`: how a torchvision family takes the run's
    activation (a ResNet's ReLUs, a ViT's GELUs)."""
    for name, child in module.named_children():
        if isinstance(child, kind):
            setattr(module, name, make())
        else:
            replace_modules(child, kind, make)


def build_model(
    model: DictConfig, activation: DictConfig, init: DictConfig, inputs: ModelInputs, check: bool = True
) -> nn.Module:
    """The family's network, initialised by the `init` group, its output shape checked (unless `check`
    is false) on the device it was built on."""
    make_activation = build(activation)
    net = build(model, input_shape=inputs.input_shape, num_classes=inputs.num_classes, activation=make_activation)
    if not isinstance(net, nn.Module):
        raise ConfigError("model._target_", model._target_, f"must build an nn.Module, built a {type(net).__name__}")
    activation_module = make_activation()
    apply_init(net, for_activation(build(init.weight), activation_module), build(init.bias))
    if callable(getattr(net, "after_init", None)):
        net.after_init()
    if check:
        check_output(net, model._target_, inputs)
    return net


def check_output(net: nn.Module, target: str, inputs: ModelInputs) -> None:
    """Eval mode under no_grad: BatchNorm statistics, dropout's random stream and the weights stay as built."""
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            out = net(torch.zeros(2, *inputs.input_shape))
    except RuntimeError as e:
        reason = short_reason(str(e), 160)
        raise ConfigError("model", target, f"cannot take inputs shaped {inputs.input_shape} ({reason})") from None
    finally:
        net.train(was_training)
    if tuple(out.shape) != (2, inputs.num_classes):
        raise ConfigError(
            "model", target, f"returned {tuple(out.shape)} for 2 samples; the contract is (2, {inputs.num_classes})"
        )
