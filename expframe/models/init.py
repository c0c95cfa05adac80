"""Weight initialisation by the `init` group, for every layer kind a model family may bring.

A layer is initialised when its own `weight` is a matrix or a kernel (2 or more dimensions: Linear,
Conv1d/2d/3d and their transposes, Bilinear, Embedding, ...). Normalisation layers (1-D weights)
keep PyTorch's ones and zeros. An absent bias (`bias=False`, every ResNet convolution) is skipped.
"""

from collections.abc import Callable

import torch
from torch import nn

TensorInit = Callable[[torch.Tensor], object]


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
