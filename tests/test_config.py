"""Every option of every group composes and builds; Hydra's help lists the groups."""

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from expframe.build import build
from expframe.data import DeviceData
from expframe.models import build_model
from expframe.train.setup import model_inputs
from tests.conftest import CONF, make_cfg, run_cli

GROUPS = [
    "dataset",
    "model",
    "activation",
    "optimizer",
    "scheduler",
    "init",
    "loss",
    "precision",
    "device",
    "augment",
    "shift",
]
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))]


def blank_data(shape: tuple[int, ...]) -> DeviceData:
    """Shapes are all a model builder reads from a data set."""
    return DeviceData(
        torch.zeros(4, *shape),
        torch.zeros(4, dtype=torch.long),
        torch.zeros(2, *shape),
        torch.zeros(2, dtype=torch.long),
        10,
    )


TINY = blank_data((1, 28, 28))


def model_for(cfg, data: DeviceData = TINY) -> torch.nn.Module:
    return build_model(cfg.model, cfg.activation, cfg.init, model_inputs(data))


def test_every_group_has_its_options():
    names = {g: {o for gg, o in OPTIONS if gg == g} for g in GROUPS}
    assert names["dataset"] == {
        "mnist_5k",
        "digits",
        "mnist",
        "fashion_mnist",
        "cifar10",
        "synthetic",
        "image_folder",
        "mvtec",
    }
    assert names["activation"] == {"relu", "tanh", "sigmoid", "gelu", "leaky_relu", "elu", "silu"}
    assert names["optimizer"] == {"sgd", "sgd_momentum", "adam", "adamw", "rmsprop"}
    assert names["scheduler"] == {"none", "step", "exponential", "cosine"}
    assert names["init"] == {"default", "zeros", "kaiming", "xavier", "orthogonal"}
    assert names["precision"] == {"fp32", "fp16", "bf16"}
    assert names["device"] == {"auto", "cpu", "cuda"}
    assert names["model"] == {"mlp", "cnn", "resnet", "vit", "vit_small", "vit_b_16"}
    assert names["augment"] == {"none", "basic", "crop", "randaugment", "trivialaugment", "mixup", "cutmix"}
    assert names["shift"] == {"none", "standard", "noise", "blur", "weather", "digital"}
    assert names["loss"] == {"cross_entropy"}


def test_defaults_are_the_practicals_baseline():
    cfg = make_cfg()
    assert cfg.dataset.name == "mnist_5k"
    assert (cfg.model.depth, cfg.model.width, cfg.model.dropout, cfg.model.batchnorm) == (1, 128, 0.0, False)
    assert cfg.activation._target_ == "torch.nn.ReLU"
    assert cfg.optimizer._target_ == "torch.optim.SGD" and cfg.optimizer.lr == 0.01
    assert (cfg.batch_size, cfg.epochs, cfg.seed) == (64, 5, 0)
    assert cfg.init.weight is None and cfg.precision.name == "fp32" and cfg.device.type == "auto"
    model = model_for(cfg)
    assert [tuple(p.shape) for p in model.parameters()] == [(128, 784), (128,), (10, 128), (10,)]


# the ViT sizes whose patches do not divide 28: the images they are made for
IMAGES_FOR = {"vit_small": (3, 64, 64), "vit_b_16": (3, 224, 224)}


def sized(group: str, option: str) -> tuple[tuple[int, ...], list[str]]:
    """The input shape an option builds for, and the overrides that give the config that shape."""
    shape = IMAGES_FOR.get(option, (1, 28, 28)) if group == "model" else (1, 28, 28)
    extra = [] if shape == (1, 28, 28) else ["dataset=synthetic", f"dataset.source.shape=[{','.join(map(str, shape))}]"]
    return shape, extra


@pytest.mark.parametrize("group,option", OPTIONS)
def test_option_composes_and_builds(group, option):
    shape, extra = sized(group, option)
    cfg = make_cfg(f"{group}={option}", *extra)
    assert OmegaConf.to_yaml(cfg, resolve=True)
    model = model_for(cfg, blank_data(shape))
    optimizer = build(cfg.optimizer)(model.parameters())
    if cfg.scheduler.get("_target_"):
        assert isinstance(build(cfg.scheduler)(optimizer), torch.optim.lr_scheduler.LRScheduler)
    assert model(torch.zeros(2, *shape)).shape == (2, 10)


def test_model_scalars_shape_the_network():
    cfg = make_cfg("model.depth=3", "model.width=32", "model.dropout=0.5", "model.batchnorm=true", "activation=tanh")
    layers = [type(m).__name__ for m in model_for(cfg)]
    assert layers == ["Flatten"] + ["Linear", "BatchNorm1d", "Tanh", "Dropout"] * 3 + ["Linear"]
    assert [type(m).__name__ for m in model_for(make_cfg("model.depth=0"))] == ["Flatten", "Linear"]


def test_cnn_takes_colour_images():
    cfg = make_cfg("model=cnn", "model.batchnorm=true")
    colour = blank_data((3, 32, 32))
    assert model_for(cfg, colour)(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_help_lists_groups_and_options():
    out = run_cli("train.py", "--help")
    assert out.returncode == 0, out.stderr
    for group in GROUPS:
        assert f"{group}:" in out.stdout
    assert "sgd_momentum" in out.stdout and "fashion_mnist" in out.stdout
    assert "Traceback" not in out.stderr and "UserWarning" not in out.stderr


PRESETS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("preset", PRESETS)
def test_every_axis_preset_repeats_over_three_seeds_and_says_how_it_departs(preset):
    with initialize_config_dir(config_dir=str(CONF)):
        cfg = compose("train", [f"+experiment={preset}"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    assert str(params["seed"]).split(",") == ["0", "1", "2"], "every configuration over three seeds"
    assert "Departs from the practical" in (CONF / "experiment" / f"{preset}.yaml").read_text()


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")  # the dry build's stepping
@pytest.mark.parametrize("group,option", OPTIONS)
def test_the_dry_build_reads_only_what_its_cache_is_keyed_on(group, option):
    """A sweep's pre-check builds once per distinct READS (a seed sweep: once); a key the dry build
    read outside READS would let one value's pass stand for another's. Given only READS, it builds
    (uncached: `_dry_build` itself)."""
    from expframe.config.dry_build import _dry_build, build_inputs

    only_reads = OmegaConf.create(build_inputs(make_cfg(f"{group}={option}", *sized(group, option)[1])))
    with torch.device("meta"):
        _dry_build(only_reads)
