"""Weight initialisation by the `init` group, for every layer kind a model family may bring.

A layer is initialised when its own `weight` is a matrix or a kernel (2 or more dimensions: Linear,
Conv1d/2d/3d and their transposes, Bilinear, Embedding, ...): hidden and output layers alike.
Normalisation layers (1-D weights) keep PyTorch's ones and zeros. An absent bias (`bias=False`,
every ResNet convolution) is skipped. Kaiming's `nonlinearity` and the `gain` of Xavier and
orthogonal init follow the run's activation unless the init's YAML sets them.
"""

import functools
import inspect
from collections.abc import Callable

import torch
from torch import nn

TensorInit = Callable[[torch.Tensor], object]

# names torch.nn.init.calculate_gain knows; GELU, SiLU and ELU have no entry there: they behave like
# ReLU for positive inputs, so they take ReLU's gain (sqrt 2)
GAIN_NAMES = {
    "ReLU": "relu",
    "LeakyReLU": "leaky_relu",
    "Tanh": "tanh",
    "Sigmoid": "sigmoid",
    "SELU": "selu",
    "GELU": "relu",
    "SiLU": "relu",
    "ELU": "relu",
    "Identity": "linear",
}


def nonlinearity_of(activation: nn.Module) -> tuple[str, float | None]:
    """(calculate_gain's name, its parameter): LeakyReLU's negative slope; anything unknown is linear."""
    name = GAIN_NAMES.get(type(activation).__name__, "linear")
    return name, getattr(activation, "negative_slope", None) if name == "leaky_relu" else None


def for_activation(init: TensorInit | None, activation: nn.Module) -> TensorInit | None:
    """The init with the activation's nonlinearity or gain filled in where the config left it out."""
    if init is None:
        return None
    fixed = init.keywords if isinstance(init, functools.partial) else {}
    params = inspect.signature(init).parameters
    name, param = nonlinearity_of(activation)
    extra: dict[str, object] = {}
    if "nonlinearity" in params and "nonlinearity" not in fixed:
        extra["nonlinearity"] = name
        if name == "leaky_relu" and "a" not in fixed:
            extra["a"] = param
    elif "gain" in params and "gain" not in fixed:
        extra["gain"] = nn.init.calculate_gain(name, param)
    return functools.partial(init, **extra) if extra else init


def initialised_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(getattr(m, "weight", None), nn.Parameter) and m.weight.dim() >= 2]


@torch.no_grad()
def apply_init(model: nn.Module, weight_init: TensorInit | None, bias_init: TensorInit | None) -> None:
    """`None` for either keeps PyTorch's own initialisation of that tensor."""
    for layer in initialised_layers(model):
        if weight_init is not None:
            weight_init(layer.weight)
        bias = getattr(layer, "bias", None)
        if bias_init is not None and isinstance(bias, nn.Parameter):
            bias_init(bias)
