"""The augmentation axis: each variant trains on the device at every precision, seeded by the run's
seed (two seeds differ, one seed twice is identical), refused in one line where it cannot apply."""

import json

import pytest
import torch

from tests.conftest import make_cfg, run_cli_in_process, trained

VARIANTS = ["randaugment", "trivialaugment", "mixup", "cutmix"]


def folder(root, *extra: str) -> list[str]:
    return [
        "dataset=image_folder",
        f"dataset.root={root}",
        "dataset.image_size=28",
        "model=cnn",
        "energy.track=false",
        *extra,
    ]


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_each_variant_trains_a_cnn_on_an_image_folder(tiny_image_roots, tmp_path, variant, precision):
    cfg = make_cfg(*folder(tiny_image_roots["xray"], f"augment={variant}", f"precision={precision}", "epochs=1"))
    metrics = trained(cfg, tmp_path)
    assert metrics["status"] == "ok" and metrics["precision"] == precision, metrics.get("error")
    assert metrics["final_train_loss"] > 0 and 0 <= metrics["test_acc"] <= 1


@pytest.mark.parametrize("variant", VARIANTS)
def test_one_seed_twice_is_identical_and_two_seeds_differ(tmp_path, variant):
    def weights(seed: int, where: str) -> dict:
        cfg = make_cfg(
            "dataset=digits", "model=cnn", f"augment={variant}", f"seed={seed}", "epochs=1", "energy.track=false"
        )
        trained(cfg, tmp_path / where)
        return torch.load(tmp_path / where / "model.pt", weights_only=True)

    first, again, other = weights(0, "a"), weights(0, "b"), weights(1, "c")
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_a_policy_changes_the_pixels_and_a_mix_makes_soft_targets():
    from omegaconf import OmegaConf

    from expframe.data.device_data import load
    from expframe.train.augment import build_augment

    data = load(make_cfg("dataset=digits").dataset, torch.device("cpu"))
    x, y = data.train_x[:16], data.train_y[:16]
    assert torch.equal(data.batch_pixels(x), data.pixels(data.train_x, torch.arange(16)))
    policy = build_augment(
        OmegaConf.create({"name": "randaugment", "num_ops": 2, "magnitude": 20, "group": 4}),
        0,
        torch.device("cpu"),
        10,
        data.batch_pixels,
        data.normalise_pixels,
    )
    before = torch.get_rng_state()
    out, labels = policy(x, y)
    assert torch.equal(torch.get_rng_state(), before), "the run's own stream, not torch's global one"
    assert out.shape == x.shape and not torch.equal(out, x) and torch.equal(labels, y)
    mix = build_augment(OmegaConf.create({"name": "mixup", "alpha": 1.0}), 0, torch.device("cpu"), 10, None, None)
    mixed, soft = mix(x, y)
    assert soft.shape == (16, 10) and torch.allclose(soft.sum(1), torch.ones(16))
    assert ((soft > 0).sum(1) <= 2).all(), "two labels' shares"


@pytest.mark.parametrize(
    "overrides, words",
    [
        (["augment=randaugment", "augment.magnitude=31"], ["augment.magnitude=31", "[0, 30]"]),
        (["augment=randaugment", "augment.num_ops=0"], ["augment.num_ops=0", "[1, 14]"]),
        (["augment=trivialaugment", "augment.group=0"], ["augment.group=0", "integer"]),
        (["augment=mixup", "augment.alpha=0"], ["augment.alpha=0", "> 0"]),
        (["augment=cutmix", "augment.alpha=-1"], ["augment.alpha=-1", "> 0"]),
        (
            ["augment=mixup", "loss._target_=torch.nn.MultiMarginLoss", "~loss.label_smoothing"],
            ["augment='mixup'", "soft targets"],
        ),
        (["augment=fancy"], ["augment", "fancy"]),
    ],
)
def test_what_cannot_augment_is_one_line_before_training(tmp_path, overrides, words):
    code, err = run_cli_in_process("dataset=digits", "epochs=1", *overrides, f"hydra.run.dir={tmp_path / 'out'}")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code != 0 and len(lines) == 1 and lines[0].startswith("error: "), lines
    assert all(w in lines[0] for w in words), lines[0]
    assert not (tmp_path / "out").exists()


def test_vector_data_refuse_an_image_augmentation(tmp_path):
    code, err = run_cli_in_process(
        "dataset=synthetic",
        "dataset.source.shape=[20]",
        "dataset.source.n_train=200",
        "dataset.source.n_test=50",
        "augment=mixup",
        f"hydra.run.dir={tmp_path / 'out'}",
    )
    assert code != 0 and "augment" in err and "needs images" in err
    record = json.loads((tmp_path / "out" / "metrics.json").read_text()) if (tmp_path / "out").exists() else None
    assert record is None or record["status"] == "failed"
