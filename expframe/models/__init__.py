"""Model families (conf/model/*.yaml name them by `_target_`), the contract they follow, weight init.

Imports: data (`project_path` for weight files) and the ground (errors, build)."""

from expframe.models.contract import ActivationFactory, ModelFamily, ModelInputs, build_model
from expframe.models.init import apply_init, initialised_layers
from expframe.models.networks import CNN, MLP
from expframe.models.resnet import ResNet
from expframe.models.vit import ViT

__all__ = [
    "CNN",
    "MLP",
    "ResNet",
    "ViT",
    "ActivationFactory",
    "ModelFamily",
    "ModelInputs",
    "apply_init",
    "build_model",
    "initialised_layers",
]
