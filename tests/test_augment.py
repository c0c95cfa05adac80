"""The augmentation axis: each variant trains on the device at every precision, seeded by the run's
seed (two seeds differ, one seed twice is identical), refused in one line where it cannot apply."""

import json

import pytest
import torch
from tqdm import tqdm

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
        "dataset.input_shape=[20]",
        "dataset.source.n_train=200",
        "dataset.source.n_test=50",
        "augment=mixup",
        f"hydra.run.dir={tmp_path / 'out'}",
    )
    lines = [line for line in err.splitlines() if line.strip()]
    assert code != 0 and len(lines) == 1 and "augment='mixup'" in lines[0] and "needs images" in lines[0], lines
    assert not (tmp_path / "out").exists(), "refused before the run folder"


def test_train_acc_under_a_mix_is_the_larger_share_label(tmp_path):
    """Under mixup the steps train on soft targets: the epoch's train_loss is the loss on them, and
    train_acc how often the prediction on the mixed image is the label with the larger share (two
    runs of one seed: one's epoch read whole, the other's figures recorded by the loop)."""
    from expframe.measure.energy import EnergyMeter
    from expframe.measure.scoring import accuracy
    from expframe.train.loop import one_epoch, train_epoch
    from expframe.train.setup import setup

    cfg = make_cfg("dataset=digits", "augment=mixup", "augment.alpha=0.4", "epochs=1", "energy.track=false")
    run = setup(cfg, torch.device("cpu"), tmp_path)
    order = run.train_idx[torch.randperm(len(run.train_idx), generator=torch.Generator().manual_seed(0))]
    logits, targets = train_epoch(run, order, tqdm(disable=True), None)
    assert targets.shape == (len(logits), 10) and torch.allclose(targets.sum(1), torch.ones(len(logits)))
    labels = run.data.train_y[order[: len(logits)]]
    own = targets.gather(1, labels[:, None])[:, 0]
    assert (own > 0).all() and (own < 1).any(), "each sample keeps a share of its label, mixed with another"
    assert (targets.argmax(1) != labels).any(), "some mixed images are mostly their neighbour"
    with EnergyMeter(cfg.energy, tmp_path / "emissions.csv") as meter:
        row = one_epoch(setup(cfg, torch.device("cpu"), tmp_path), 1, order, None, meter)
    assert row["train_acc"] == accuracy(logits.argmax(1), targets.argmax(1))
    assert row["train_loss"] == pytest.approx(run.loss_fn(logits, targets).item(), rel=1e-6)


@pytest.mark.slow
def test_augment_axis_preset_reports_a_verdict_per_option(tmp_path):
    """`+experiment=augment_axis`: five options x three seeds, each compared with augment=none."""
    from tests.conftest import run_cli

    sweep = tmp_path / "sweep"
    done = run_cli(
        "train.py",
        "-m",
        "+experiment=augment_axis",
        "dataset=digits",
        "epochs=1",
        "energy.track=false",
        f"hydra.sweep.dir={sweep}",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    import yaml

    jobs = [yaml.safe_load((p / ".hydra" / "overrides.yaml").read_text())[:2] for p in sweep.glob("[0-9]*")]
    assert all(json.loads((p / "metrics.json").read_text())["status"] == "ok" for p in sweep.glob("[0-9]*"))
    assert sorted((a.split("=")[1], int(s.split("=")[1])) for a, s in jobs) == sorted(
        (a, s) for a in ("none", "basic", "randaugment", "mixup", "cutmix") for s in (0, 1, 2)
    )
    summary = (sweep / "summary.md").read_text()
    comparison = summary.split("Against the baseline (augment=none)")[1]
    rows = {line.split("|")[1].strip(): line for line in comparison.splitlines() if line.startswith("| ")}
    assert "baseline" in rows["none"]
    for option in ("basic", "randaugment", "mixup", "cutmix"):
        assert any(v in rows[option] for v in ("P: better", "P: worse", "P: no detectable difference")), rows[option]


@pytest.mark.parametrize("variant", ["basic", *VARIANTS])
def test_each_variant_trains_on_rgb_images(tmp_path, variant):
    """3-channel images: the policies' colour operations and the mixes on an RGB folder."""
    from PIL import Image

    rng = torch.Generator().manual_seed(0)
    for split, n in (("train", 24), ("test", 8)):
        for label in ("a", "b"):
            (tmp_path / "rgb" / split / label).mkdir(parents=True)
            for i in range(n):
                tint = torch.tensor([200, 40, 40] if label == "a" else [40, 40, 200]).view(3, 1, 1)
                noise = torch.randint(0, 50, (3, 16, 16), generator=rng)
                image = (tint + noise).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
                Image.fromarray(image).save(tmp_path / "rgb" / split / label / f"{i}.png")
    cfg = make_cfg(
        *folder(tmp_path / "rgb", f"augment={variant}", "epochs=1", "dataset.val_fraction=0.25"),
        "dataset.channels=3",
    )
    metrics = trained(cfg, tmp_path / "run")
    assert metrics["status"] == "ok", metrics.get("error")
    assert metrics["final_train_loss"] > 0 and 0 <= metrics["test_acc"] <= 1
