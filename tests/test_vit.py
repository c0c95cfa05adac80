"""The ViT family: torchvision's VisionTransformer adapted to the data and the axes, trained through
the same loop as every family, and local weights loaded, adapted or refused in one line."""

import os
import pickle

import pytest
import torch
from torch import nn

from expframe.errors import ConfigError
from expframe.models.contract import ModelInputs, build_model
from tests.conftest import make_cfg, trained


def vit(*overrides: str, shape=(1, 28, 28), classes: int = 10) -> nn.Module:
    cfg = make_cfg("model=vit", *overrides)
    return build_model(cfg.model, cfg.activation, cfg.init, ModelInputs(shape, classes)).net


def test_the_tiny_vit_learns_digits_in_a_few_epochs(tmp_path):
    metrics = trained(
        make_cfg(
            "model=vit", "activation=gelu", "optimizer=adam", "optimizer.lr=0.001", "epochs=3", "energy.track=false"
        ),
        tmp_path,
    )
    assert metrics["status"] == "ok" and metrics["test_acc"] > 0.5, metrics["test_acc"]
    assert 100_000 < metrics["n_params"] < 200_000


def test_the_axes_reach_the_built_module():
    assert len(vit("model.depth=2").encoder.layers) == 2 and len(vit("model.depth=6").encoder.layers) == 6
    relu = vit("activation=relu")
    assert not any(isinstance(m, nn.GELU) for m in relu.modules())
    assert sum(isinstance(m, nn.ReLU) for m in relu.encoder.modules()) == 4, "one per encoder MLP"
    assert sum(isinstance(m, nn.GELU) for m in vit("activation=gelu").encoder.modules()) == 4
    dropped = vit("model.dropout=0.3")
    assert dropped.encoder.layers[0].self_attention.dropout == 0.3
    assert {m.p for m in dropped.encoder.modules() if isinstance(m, nn.Dropout)} == {0.3}
    assert vit(shape=(3, 35, 35), classes=4).conv_proj.in_channels == 3 and vit().conv_proj.in_channels == 1
    assert vit("model.width=32", "model.heads=2").encoder.layers[0].self_attention.num_heads == 2


def test_init_reaches_the_linears_and_the_patch_projection_and_leaves_the_tokens():
    torch.manual_seed(0)
    plain = vit()
    torch.manual_seed(0)
    zeros = vit("init=zeros")
    assert torch.count_nonzero(zeros.conv_proj.weight) == 0
    assert torch.count_nonzero(zeros.encoder.layers[0].mlp[0].weight) == 0
    assert torch.count_nonzero(zeros.encoder.layers[0].self_attention.out_proj.weight) == 0
    assert torch.count_nonzero(plain.conv_proj.weight) > 0
    assert torch.count_nonzero(zeros.class_token) == 0, "torchvision's zeros"
    assert 0.01 < zeros.encoder.pos_embedding.std().item() < 0.03, "torchvision's normal(std=0.02)"


@pytest.mark.parametrize(
    "overrides, shape, words",
    [
        (["model.batchnorm=true"], (1, 28, 28), ["model.batchnorm=true", "LayerNorm"]),
        (["model.patch_size=5"], (1, 28, 28), ["model.patch_size=5", "divide the image side 28"]),
        (["model.heads=3"], (1, 28, 28), ["model.heads=3", "model.width=64"]),
        ([], (1, 28, 32), ["model='vit'", "square"]),
        ([], (4, 28, 28), ["model='vit'", "1 or 3 channels"]),
    ],
)
def test_what_a_vit_cannot_be_is_one_line(overrides, shape, words):
    with pytest.raises(ConfigError) as refused:
        vit(*overrides, shape=shape)
    assert all(w in str(refused.value) for w in words), str(refused.value)


def torchvision_state(image_size: int, classes: int, channels: int = 3) -> dict:
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(1)
    net = VisionTransformer(image_size, 7, 4, 4, 64, 128, num_classes=classes)
    if channels != 3:
        net.conv_proj = nn.Conv2d(channels, 64, 7, 7)
    return net.state_dict()


def test_local_weights_load_with_the_head_replaced_and_the_positions_interpolated(tmp_path):
    """A torchvision ViT trained elsewhere on 3x56x56 images and 5 classes, loaded into the tiny ViT
    for 1x28x28 digits and 10 classes."""
    from torchvision.models.vision_transformer import interpolate_embeddings

    state = torchvision_state(56, 5)
    torch.save(state, tmp_path / "vit.pt")
    torch.manual_seed(0)
    net = vit(f"model.weights={tmp_path / 'vit.pt'}")
    own = net.state_dict()
    for key in ("encoder.layers.encoder_layer_0.mlp.0.weight", "encoder.ln.weight", "class_token"):
        assert torch.equal(own[key], state[key]), key
    assert torch.equal(own["conv_proj.weight"], state["conv_proj.weight"].sum(1, keepdim=True))
    expected = interpolate_embeddings(28, 7, {"encoder.pos_embedding": state["encoder.pos_embedding"]})
    assert own["encoder.pos_embedding"].shape == (1, 17, 64)
    assert torch.equal(own["encoder.pos_embedding"], expected["encoder.pos_embedding"])
    assert own["heads.head.weight"].shape == (10, 64) and torch.count_nonzero(own["heads.head.weight"]) == 0
    same = torchvision_state(28, 10, channels=1)
    torch.save(same, tmp_path / "same.pt")
    loaded = vit(f"model.weights={tmp_path / 'same.pt'}").state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in same.items()), "a file of this very shape loads whole"


def test_a_foreign_or_hostile_weights_file_is_one_line(tmp_path):
    import torchvision

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (tmp_path / "hostile.pt").write_bytes(pickle.dumps(Payload()))
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "resnet.pt")
    wider = torchvision_state(28, 10, channels=1)
    wider = {k: torch.cat([v, v], -1) if k == "encoder.ln.weight" else v for k, v in wider.items()}
    torch.save(wider, tmp_path / "wider.pt")
    for name, words in (
        ("hostile.pt", ["cannot be read as a state_dict"]),
        ("resnet.pt", ["not a torchvision VisionTransformer", "encoder.pos_embedding"]),
        ("wider.pt", ["does not fit this ViT", "encoder.ln.weight", "(128,)", "(64,)"]),
        ("absent.pt", ["cannot be read"]),
    ):
        with pytest.raises(ConfigError) as refused:
            vit(f"model.weights={tmp_path / name}")
        assert str(refused.value).startswith("model.weights=") and all(w in str(refused.value) for w in words), str(
            refused.value
        )
    assert not marker.exists()


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_the_vit_trains_under_reduced_precision(precision, tmp_path):
    metrics = trained(
        make_cfg(
            "dataset=digits",
            "model=vit",
            "model.patch_size=4",
            f"precision={precision}",
            "epochs=1",
            "energy.track=false",
        ),
        tmp_path,
    )
    assert metrics["status"] == "ok" and metrics["precision"] == precision and metrics["test_acc"] > 0.3, metrics[
        "test_acc"
    ]
