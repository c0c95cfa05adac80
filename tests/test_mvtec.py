"""dataset=mvtec: an MVTec AD root as published (categories of train/good, test/good, test/<defect>,
ground_truth/), written here as PNG files, trains normal/defect with no file moved."""

import json
from pathlib import Path

import pytest

from expframe.data.mvtec import list_mvtec
from expframe.errors import ConfigError
from tests.conftest import MVTEC_DEFECTS, run_cli_in_process, run_train_in_process, write_mvtec

DEFECTS = MVTEC_DEFECTS


@pytest.fixture(scope="module")
def mvtec_root(tmp_path_factory) -> Path:
    return write_mvtec(tmp_path_factory.mktemp("mvtec_ad"))


def test_the_published_layout_is_split_stratified_and_seeded(mvtec_root):
    shares = {"train": 0.5, "val": 0.1, "test": 0.4}
    files = list_mvtec(mvtec_root / "bottle", shares, 0, strict=False)
    every = [p for entries in files.values() for p, _ in entries]
    assert len(every) == len(set(every)) == 40 + 20 + 25, "each image in one share, none left out"
    assert not any("ground_truth" in str(p) for p in every), "the masks are not images to classify"
    train_good = {p for p, _ in files["train"] if p.parent.name == "good" and p.parent.parent.name == "train"}
    assert len(train_good) == 40, "every train/good image trains"
    for folder, n in {"good": 20, **DEFECTS}.items():
        per_share = {
            s: sum(1 for p, _ in files[s] if p.parent.name == folder and p.parent.parent.name == "test") for s in files
        }
        assert per_share == {
            "train": round(0.5 * n),
            "val": round(0.1 * n),
            "test": n - round(0.5 * n) - round(0.1 * n),
        }
    assert {label for p, label in files["test"] if p.parent.name != "good"} == {1}
    again = list_mvtec(mvtec_root / "bottle", shares, 0, strict=False)
    other = list_mvtec(mvtec_root / "bottle", shares, 1, strict=False)
    assert again == files and other["test"] != files["test"]


def test_a_category_trains_normal_against_defect_with_no_file_moved(mvtec_root, tmp_path):
    before = sorted(str(p) for p in mvtec_root.rglob("*"))
    run = tmp_path / "run"
    done = run_train_in_process(
        "dataset=mvtec",
        f"dataset.root={mvtec_root}",
        "dataset.category=bottle",
        "dataset.image_size=32",
        f"dataset.cache_dir={tmp_path / 'cache'}",
        "model=vit",
        "model.patch_size=8",
        "optimizer=adam",
        "optimizer.lr=0.003",
        "epochs=8",
        "energy.track=false",
        f"hydra.run.dir={run}",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["class_names"] == ["good", "defect"]
    assert metrics["positive"] == 1 and metrics["test_auroc"] is not None
    assert metrics["test_auroc"] > 0.7, metrics["test_auroc"]
    assert sorted(str(p) for p in mvtec_root.rglob("*")) == before, "nothing moved, nothing written into the data"


@pytest.mark.parametrize(
    "overrides, words",
    [
        ([], ["dataset.category=null", "bottle, capsule"]),
        (["dataset.category=bottles"], ["dataset.category='bottles'", "bottle, capsule"]),
        (["dataset.category=bottle", "dataset.split.test=0"], ["dataset.split", "sum to 1"]),
        (["dataset.category=bottle", "dataset.split.train=0.9", "dataset.split.test=0.0"], ["dataset.split"]),
        (["dataset.category=bottle", "dataset.channels=2"], ["dataset.channels=2", "1 (grayscale) or 3"]),
    ],
)
def test_what_cannot_be_read_is_one_line_before_training(mvtec_root, tmp_path, overrides, words):
    code, err = run_cli_in_process(
        "dataset=mvtec", f"dataset.root={mvtec_root}", *overrides, f"hydra.run.dir={tmp_path / 'out'}"
    )
    lines = [line for line in err.splitlines() if line.strip()]
    assert code != 0 and len(lines) == 1 and lines[0].startswith("error: "), lines
    assert all(w in lines[0] for w in words), lines[0]
    assert not (tmp_path / "out").exists()


def test_a_category_folder_itself_is_a_root_and_a_missing_part_is_named(mvtec_root, tmp_path):
    from expframe.data.mvtec import category_folder

    assert category_folder(str(mvtec_root / "capsule"), None) == mvtec_root / "capsule"
    broken = tmp_path / "broken"
    (broken / "train" / "good").mkdir(parents=True)
    (broken / "test" / "good").mkdir(parents=True)
    with pytest.raises(ConfigError) as refused:
        list_mvtec(broken, {"train": 0.5, "val": 0.1, "test": 0.4}, 0, strict=False)
    assert "test/<defect>" in str(refused.value)
