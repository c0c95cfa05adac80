"""torchvision's ResNets (never downloaded: `weights=None`), adapted to the data set and the axes.

The first convolution takes `dataset.channels`, the classifier `num_classes`; every ReLU becomes the
run's activation, so the activation axis applies. `weights`: a local state_dict loaded after the
`init` group has run (loaded weights win); tensors that do not fit (a 1000-class fc, an RGB first
convolution for grayscale input) are skipped and named in one log line.
"""

import logging

import torch
from torch import nn

from expframe.data.raw import project_path
from expframe.errors import ConfigError, short_reason
from expframe.models.contract import ActivationFactory, replace_modules

log = logging.getLogger("expframe")

ARCHS = ("resnet18", "resnet34", "resnet50")


class ResNet(nn.Module):
    def __init__(
        self,
        *,
        input_shape: tuple[int, ...],
        num_classes: int,
        activation: ActivationFactory,
        arch: str = "resnet18",
        weights: str | None = None,
        freeze_backbone: bool = False,
    ) -> None:
        import torchvision.models as models

        if arch not in ARCHS:
            raise ValueError(f"arch {arch!r} is not one of {', '.join(ARCHS)}")
        if len(input_shape) != 3:
            raise ValueError(f"a ResNet takes images shaped (channels, height, width), not {input_shape}")
        super().__init__()
        net = getattr(models, arch)(weights=None, num_classes=num_classes)
        net.conv1 = nn.Conv2d(input_shape[0], 64, kernel_size=7, stride=2, padding=3, bias=False)
        replace_modules(net, nn.ReLU, activation)
        self.net = net
        self.weights, self.freeze_backbone = weights, freeze_backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def after_init(self) -> None:
        """Called by build_model once the init group has run."""
        if self.weights:
            self.load_local(self.weights)
        if self.freeze_backbone:
            for name, param in self.net.named_parameters():
                param.requires_grad_(name.startswith("fc."))

    def load_local(self, path: str) -> None:
        try:
            state = torch.load(project_path(path), map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, ValueError) as e:
            raise ConfigError("model.weights", path, f"cannot be read as a state_dict ({short_reason(e)})") from None
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ConfigError("model.weights", path, "is not a state_dict (a mapping of names to tensors)")
        state = {k.removeprefix("net."): v for k, v in state.items()}
        own = self.net.state_dict()
        fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        skipped = sorted(set(state) - set(fitting))
        self.net.load_state_dict(fitting, strict=False)
        missing = sorted(set(own) - set(fitting))
        log.info(
            "model.weights %s: loaded %d tensors; skipped %s; left as initialised %s",
            path,
            len(fitting),
            ", ".join(skipped) or "none",
            ", ".join(missing) or "none",
        )
