"""The MLP and CNN families. Both follow expframe.models.contract: keyword arguments in, logits out."""

import math

from torch import nn

from expframe.models.contract import ActivationFactory


def _hidden_block(
    layer: nn.Module, width: int, activation: ActivationFactory, batchnorm: bool, dropout: float, bn_cls: type
) -> list[nn.Module]:
    """Layer -> [BatchNorm] -> activation -> [Dropout]: the order the practical prescribes."""
    block = [layer]
    if batchnorm:
        block.append(bn_cls(width))
    block.append(activation())
    if dropout > 0:
        block.append(nn.Dropout(dropout))
    return block


def _mlp_head(
    in_features: int,
    depth: int,
    width: int,
    num_classes: int,
    activation: ActivationFactory,
    dropout: float,
    batchnorm: bool,
) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for i in range(depth):
        fan_in = in_features if i == 0 else width
        layers += _hidden_block(nn.Linear(fan_in, width), width, activation, batchnorm, dropout, nn.BatchNorm1d)
    layers.append(nn.Linear(width if depth else in_features, num_classes))
    return layers


class MLP(nn.Sequential):
    def __init__(
        self,
        *,
        input_shape: tuple[int, ...],
        num_classes: int,
        activation: ActivationFactory,
        depth: int,
        width: int,
        dropout: float,
        batchnorm: bool,
    ) -> None:
        super().__init__(
            nn.Flatten(),
            *_mlp_head(math.prod(input_shape), depth, width, num_classes, activation, dropout, batchnorm),
        )


class CNN(nn.Sequential):
    """Conv blocks (3x3 conv, [BatchNorm], activation, 2x2 max-pool), then an MLP head."""

    def __init__(
        self,
        *,
        input_shape: tuple[int, ...],
        num_classes: int,
        activation: ActivationFactory,
        channels: list[int],
        depth: int,
        width: int,
        dropout: float,
        batchnorm: bool,
    ) -> None:
        if len(input_shape) != 3:
            raise ValueError(f"CNN takes images shaped (channels, height, width), not inputs shaped {input_shape}")
        in_ch, height, width_px = input_shape
        layers: list[nn.Module] = []
        for out_ch in channels:
            conv = nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1)
            layers += _hidden_block(conv, out_ch, activation, batchnorm, 0.0, nn.BatchNorm2d)
            layers.append(nn.MaxPool2d(2))
            in_ch, height, width_px = out_ch, height // 2, width_px // 2
        layers.append(nn.Flatten())
        layers += _mlp_head(in_ch * height * width_px, depth, width, num_classes, activation, dropout, batchnorm)
        super().__init__(*layers)
