"""torchvision's Vision Transformer (never downloaded: `weights=None`), adapted to the data and the axes
as the other families are.

- The patch projection takes `dataset.channels` (1 or 3) and any square image size `patch_size`
  divides; the head has `num_classes` outputs.
- `depth` is the number of encoder layers, `width` the hidden size, `heads` the attention heads,
  `mlp_dim` the encoder MLP's hidden size.
- `activation` replaces the encoder MLP's GELU (the ViT's usual choice is `activation=gelu`; the
  project's default activation, ReLU, applies as it does to every family, so a `model=` comparison
  changes one axis only).
- `dropout` is the encoder's dropout and the attention's dropout.
- `init` reaches every Linear (the encoder MLPs, the attention's output projection, the head) and
  the patch projection, like any family's layers; the attention's fused input projection, the class
  token (zeros) and the position embedding (normal, std 0.02) keep torchvision's initialisation.
- `batchnorm=true` is refused: a ViT normalises with LayerNorm.
- `weights`: a local torchvision-format state dict (weights only), loaded after `init`: the head is
  replaced when the class count differs, the position embedding interpolated (torchvision's
  `interpolate_embeddings`) when the image size does, and an RGB patch projection summed over its
  channels for grayscale input (the same response to a gray image).
"""

import logging
from collections import OrderedDict

import torch
from torch import nn

from expframe.data.raw import project_path
from expframe.errors import ConfigError, short_reason
from expframe.models.contract import ActivationFactory, replace_modules

log = logging.getLogger("expframe")

HEAD = ("heads.head.weight", "heads.head.bias")
POSITION = "encoder.pos_embedding"
PROJECTION = "conv_proj.weight"


def check_shape(input_shape: tuple[int, ...], patch_size: int, width: int, heads: int) -> None:
    if len(input_shape) != 3 or input_shape[0] not in (1, 3) or input_shape[1] != input_shape[2]:
        raise ConfigError(
            "model", "vit", f"takes square images with 1 or 3 channels (channels, side, side), not {list(input_shape)}"
        )
    side = input_shape[1]
    if patch_size < 1 or side % patch_size:
        raise ConfigError(
            "model.patch_size",
            patch_size,
            f"must divide the image side {side} (dataset.input_shape {list(input_shape)})",
        )
    if heads < 1 or width % heads:
        raise ConfigError("model.heads", heads, f"must divide model.width={width} (each head takes width / heads)")


class ViT(nn.Module):
    def __init__(
        self,
        *,
        input_shape: tuple[int, ...],
        num_classes: int,
        activation: ActivationFactory,
        depth: int = 4,
        width: int = 64,
        heads: int = 4,
        mlp_dim: int = 128,
        patch_size: int = 7,
        dropout: float = 0.0,
        batchnorm: bool = False,
        weights: str | None = None,
    ) -> None:
        from torchvision.models.vision_transformer import VisionTransformer

        if batchnorm:
            raise ConfigError("model.batchnorm", True, "a ViT normalises with LayerNorm; use model.batchnorm=false")
        check_shape(input_shape, patch_size, width, heads)
        super().__init__()
        net = VisionTransformer(
            image_size=input_shape[1],
            patch_size=patch_size,
            num_layers=depth,
            num_heads=heads,
            hidden_dim=width,
            mlp_dim=mlp_dim,
            dropout=dropout,
            attention_dropout=dropout,
            num_classes=num_classes,
        )
        if input_shape[0] != 3:
            net.conv_proj = nn.Conv2d(input_shape[0], width, kernel_size=patch_size, stride=patch_size)
            nn.init.trunc_normal_(net.conv_proj.weight, std=(1 / (input_shape[0] * patch_size**2)) ** 0.5)
            nn.init.zeros_(net.conv_proj.bias)
        replace_modules(net.encoder, nn.GELU, activation)
        self.net = net
        self.weights = weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def after_init(self) -> None:
        """Called by build_model once the init group has run: loaded weights win."""
        if self.weights:
            self.load_local(self.weights)

    def load_local(self, path: str) -> None:
        try:
            state = torch.load(project_path(path), map_location="cpu", weights_only=True)
        except Exception as e:  # pickle, zip, runtime and OS errors for a damaged, foreign or crafted file
            raise ConfigError(
                "model.weights", path, f"cannot be read as a state_dict ({short_reason(e, 120)})"
            ) from None
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ConfigError("model.weights", path, "is not a state_dict (a mapping of names to tensors)")
        state = OrderedDict((k.removeprefix("net."), v) for k, v in state.items())
        if POSITION not in state or PROJECTION not in state:
            raise ConfigError(
                "model.weights",
                path,
                f"is not a torchvision VisionTransformer's state_dict (no {POSITION}, {PROJECTION})",
            )
        own = self.net.state_dict()
        state = self._adapted(path, state, own)
        misfit = [k for k, v in state.items() if k not in own or own[k].shape != v.shape]
        missing = [k for k in own if k not in state and k not in HEAD]
        if misfit or missing:
            key = (misfit or missing)[0]
            found = tuple(state[key].shape) if key in state else "absent"
            wanted = tuple(own[key].shape) if key in own else "absent"
            raise ConfigError(
                "model.weights",
                path,
                f"does not fit this ViT: {key} is {found} in the file, {wanted} here "
                "(model.depth, width, heads, mlp_dim and patch_size must be the file's)",
            )
        self.net.load_state_dict(state, strict=False)
        log.info(
            "model.weights %s: loaded %d tensors%s",
            path,
            len(state),
            ""
            if all(k in state for k in HEAD)
            else f"; head left as initialised for {self.net.heads.head.out_features} classes",
        )

    def _adapted(self, path: str, state: OrderedDict, own: dict) -> OrderedDict:
        """The file's tensors fitted to this model where torchvision's conventions allow it."""
        from torchvision.models.vision_transformer import interpolate_embeddings

        if any(k in state and state[k].shape != own[k].shape for k in HEAD):
            state = OrderedDict((k, v) for k, v in state.items() if k not in HEAD)
        weight = state[PROJECTION]
        if weight.dim() == 4 and weight.shape[1] == 3 and own[PROJECTION].shape[1] == 1:
            state[PROJECTION] = weight.sum(dim=1, keepdim=True)
        if state[POSITION].shape[-1] == own[POSITION].shape[-1] and state[POSITION].shape[1] != own[POSITION].shape[1]:
            try:
                state = interpolate_embeddings(self.net.image_size, self.net.patch_size, state)
            except Exception as e:  # torchvision asserts on shapes it cannot interpolate
                raise ConfigError(
                    "model.weights", path, f"position embedding cannot be interpolated ({short_reason(e, 120)})"
                ) from None
        return state
