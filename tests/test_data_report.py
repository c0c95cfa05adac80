"""`expframe-data`: the data report on a folder written here (two classes at 3:1, an unreadable file,
an image copied from train into test, a resized copy of another), on the embedded and torchvision
sets, its bad input, and the leak line of a run trained on the same folder."""

import contextlib
import io
import json
import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from expframe.cli import data_report
from expframe.data import duplicates
from tests.conftest import run_train_in_process
from tests.support.documentation import documentation

SIZE = 40


def picture(rng: np.random.Generator, channels: int = 1) -> np.ndarray:
    """A smooth random field plus fine noise: every picture differs at every scale."""
    coarse = torch.from_numpy(rng.uniform(0, 255, (1, channels, 5, 5))).float()
    smooth = torch.nn.functional.interpolate(coarse, size=(SIZE, SIZE), mode="bicubic", align_corners=False)[0]
    noisy = smooth + torch.from_numpy(rng.normal(0, 12, (channels, SIZE, SIZE))).float()
    return noisy.clamp(0, 255).round().to(torch.uint8).permute(1, 2, 0).squeeze(-1).numpy()


def write_checked_folder(root: Path, channels: int = 1) -> Path:
    """train: NORMAL 30 + one unreadable file, PNEUMONIA 10; test: NORMAL 6 + a byte copy of a
    training image, PNEUMONIA 2 + a training image saved again at 28 px (a resized copy)."""
    rng = np.random.default_rng(7)
    counts = {("train", "NORMAL"): 30, ("train", "PNEUMONIA"): 10, ("test", "NORMAL"): 6, ("test", "PNEUMONIA"): 2}
    for (split, cls), n in counts.items():
        (root / split / cls).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(picture(rng, channels)).save(root / split / cls / f"{cls.lower()}_{i:02d}.png")
    (root / "train" / "NORMAL" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    shutil.copy(root / "train" / "NORMAL" / "normal_03.png", root / "test" / "NORMAL" / "copy_of_normal_03.png")
    with Image.open(root / "train" / "PNEUMONIA" / "pneumonia_04.png") as image:
        image.resize((28, 28), Image.Resampling.BILINEAR).save(root / "test" / "PNEUMONIA" / "smaller_pneumonia_04.png")
    return root


def run(*args: str) -> tuple[int, str, str]:
    out, err, code = io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            data_report.main(list(args))
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
            if isinstance(e.code, str):
                err.write(e.code + "\n")
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def checked(tmp_path_factory) -> tuple[Path, Path, dict, str]:
    root = write_checked_folder(tmp_path_factory.mktemp("xrays"))
    out = tmp_path_factory.mktemp("report") / "data"
    code, stdout, stderr = run(
        "dataset=image_folder", f"dataset.root={root}", f"dataset.image_size={SIZE}", "--out", str(out)
    )
    assert code == 0, stderr
    return root, out, json.loads((out / data_report.REPORT_FILE).read_text()), stdout


def test_counts_and_imbalance(checked):
    _, _, report, stdout = checked
    pool, train, val, test = (report["classes"][s] for s in ("train+val", "train", "val", "test"))
    # train/ holds 40 readable images at 3:1; the run's seeded val split takes 0.1 of them
    assert {c: pool["classes"][c]["count"] for c in ("NORMAL", "PNEUMONIA")} == {"NORMAL": 30, "PNEUMONIA": 10}
    assert pool["imbalance"] == 3.0 and pool["classes"]["PNEUMONIA"]["share"] == 0.25
    assert train["count"] + val["count"] == 40 and val["count"] == 4
    for c in ("NORMAL", "PNEUMONIA"):
        assert train["classes"][c]["count"] + val["classes"][c]["count"] == pool["classes"][c]["count"]
    assert test["classes"]["NORMAL"]["count"] == 7 and test["classes"]["PNEUMONIA"]["count"] == 3
    normal, pneumonia = (train["classes"][c]["count"] for c in ("NORMAL", "PNEUMONIA"))
    assert train["imbalance"] == pytest.approx(normal / pneumonia)
    assert test["imbalance"] == pytest.approx(7 / 3)
    assert report["chance_accuracy"] == 0.5
    assert test["majority_accuracy"] == pytest.approx(0.7)
    n, k = train["count"], 2
    weights = {"NORMAL": n / (k * normal), "PNEUMONIA": n / (k * pneumonia)}
    assert report["class_weights_balanced"] == pytest.approx(weights)
    assert "imbalance 3.00:1 (train+val;" in stdout


def test_the_bad_file_is_listed_with_its_reason(checked):
    _, _, report, stdout = checked
    assert [b["file"] for b in report["bad_files"]] == ["train/NORMAL/broken.png"]
    assert "not a readable image" in report["bad_files"][0]["reason"]
    assert "broken.png" in stdout


def test_exact_and_near_copies_are_train_test_leaks(checked):
    _, out, report, stdout = checked
    groups = {frozenset(m["file"] for m in g["members"]): g for g in report["duplicates"]["groups"]}
    exact = frozenset({"train/NORMAL/normal_03.png", "test/NORMAL/copy_of_normal_03.png"})
    near = frozenset({"train/PNEUMONIA/pneumonia_04.png", "test/PNEUMONIA/smaller_pneumonia_04.png"})
    assert set(groups) == {exact, near}
    assert groups[exact]["identical"] and not groups[near]["identical"]
    assert all(g["splits"] == ["test", "train"] for g in groups.values())
    assert report["duplicates"]["leaks"] == [{"split": "test", "other": "train", "identical": 1, "near": 1}]
    assert "LEAK: 1 identical and 1 near-identical test image(s) also in train" in stdout
    summary = (out / data_report.SUMMARY_FILE).read_text()
    assert "**Warning:** LEAK" in summary and "copy_of_normal_03.png" in summary
    assert "pHash within 8 of 64 bits" in report["duplicates"]["rule"]


def test_image_facts_and_statistics_match_an_independent_computation(checked):
    root, _, report, _ = checked
    pixels = np.stack(
        [np.asarray(Image.open(p), dtype=np.float64) / 255 for p in sorted((root / "train").rglob("*_*.png"))]
    )
    assert len(pixels) == 40
    assert report["images"]["mean"] == pytest.approx([pixels.mean()], abs=1e-6)
    assert report["images"]["std"] == pytest.approx([pixels.std()], abs=1e-6)
    files = report["images"]["files"]
    assert files["height"] == {"min": 28, "median": SIZE, "max": SIZE} and files["modes"] == {"L": 50}
    assert report["images"]["stored_shape"] == [1, SIZE, SIZE]


def test_figures_and_tensorboard(checked):
    _, out, report, _ = checked
    for name in (data_report.CLASSES_FIGURE, data_report.SAMPLES_FIGURE, data_report.COPIES_FIGURE):
        with Image.open(out / name) as image:
            assert image.width > 200 and image.height > 100
    events = EventAccumulator(str(out), size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    assert {"data/class_distribution", "data/samples", "data/copies_across_splits"} <= set(events.Tags()["images"])
    text = events.Tensors("data/summary/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "copy_of_normal_03.png" in text and "## Classes" in text


def test_a_run_on_the_same_folder_logs_the_leak(checked, tmp_path):
    root = checked[0]
    done = run_train_in_process(
        "dataset=image_folder",
        f"dataset.root={root}",
        f"dataset.image_size={SIZE}",
        "model=cnn",
        "epochs=1",
        "dataset.val_fraction=0.2",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert done.returncode == 0, done.stderr
    log = (tmp_path / "run" / "train.log").read_text()
    leak = [line for line in log.splitlines() if "data leak" in line]
    assert len(leak) == 1 and "1 identical and 1 near-identical test image(s) of train" in leak[0]


def test_rgb_folder_and_seed_moves_only_the_val_split(tmp_path):
    root = write_checked_folder(tmp_path / "rgb", channels=3)
    reports = []
    for seed in (0, 1):
        out = tmp_path / f"out{seed}"
        code, _, stderr = run(
            "dataset=image_folder", f"dataset.root={root}", "dataset.channels=3", f"seed={seed}", "--out", str(out)
        )
        assert code == 0, stderr
        reports.append(json.loads((out / data_report.REPORT_FILE).read_text()))
    assert len(reports[0]["images"]["mean"]) == 3 and reports[0]["images"]["mean"] == reports[1]["images"]["mean"]
    assert reports[0]["classes"]["test"] == reports[1]["classes"]["test"]
    assert reports[0]["duplicates"]["leaks"] == reports[1]["duplicates"]["leaks"]


def test_embedded_and_torchvision_sets(tmp_path, tiny_mnist_root):
    code, stdout, stderr = run("dataset=digits", "--out", str(tmp_path / "digits"))
    assert code == 0, stderr
    report = json.loads((tmp_path / "digits" / data_report.REPORT_FILE).read_text())
    assert report["classes"]["train+val"]["count"] + report["classes"]["test"]["count"] == 1797
    assert report["duplicates"]["checked"] and report["bad_files"] == []
    assert "digits: train" in stdout
    code, _, stderr = run("dataset=mnist", f"dataset.root={tiny_mnist_root}", "--out", str(tmp_path / "mnist"))
    assert code == 0, stderr
    report = json.loads((tmp_path / "mnist" / data_report.REPORT_FILE).read_text())
    assert report["classes"]["test"]["count"] == 100
    code, _, stderr = run(
        "dataset=synthetic", "dataset.source.shape=[16]", "dataset.input_shape=[16]", "--out", str(tmp_path / "vectors")
    )
    assert code == 0, stderr
    report = json.loads((tmp_path / "vectors" / data_report.REPORT_FILE).read_text())
    assert not report["duplicates"]["checked"] and report["images"]["mean"] is None


@pytest.mark.parametrize(
    ("make", "args", "expected"),
    [
        (None, ["dataset=image_folder", "dataset.root=/no/such/folder"], "dataset.root"),
        ("empty", ["dataset=image_folder"], "is an empty class folder"),
        ("unreadable", ["dataset=image_folder"], "holds no readable image"),
        (None, ["dataset=digits", "model=cnn"], "must set dataset=NAME, dataset.KEY=VALUE or seed=N"),
        (None, ["dataset=digits", "dataset.val_fraction=2"], "dataset.val_fraction"),
        (None, ["dataset=nope"], "dataset"),
        (None, ["dataset=digits", "dataset.source._target_=os.system"], "os.system"),
        (None, ["dataset=digits", "+dataset.val_fracton=0.2"], "did you mean dataset.val_fraction?"),
        (None, ["dataset=digits", "--samples", "0"], "must be an integer from 1 to 64"),
        ("out", ["dataset=digits"], "holds files already"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, make, args, expected):
    root = tmp_path / "data"
    if make in ("empty", "unreadable"):
        for split in ("train", "test"):
            (root / split / "a").mkdir(parents=True)
            if make == "unreadable":
                (root / split / "a" / "x.png").write_bytes(b"no")
        args = [*args, f"dataset.root={root}"]
    out = tmp_path / "out"
    if make == "out":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    code, stdout, stderr = run(*args, "--out", str(out))
    assert code != 0 and stderr.startswith("error:") and expected in stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert sorted(p.name for p in out.iterdir()) == (["keep.txt"] if make == "out" else []) if out.exists() else True


def test_near_rule_separates_resized_copies_from_distinct_images():
    """Copies saved at half the size or more and decoded back at the stored size are near-identical
    to their originals; distinct pictures are not, to one another or to the copies."""
    rng = np.random.default_rng(3)
    originals = torch.from_numpy(np.stack([picture(rng) for _ in range(60)]))[:, None]
    copies = []
    for size in (SIZE // 2, 28, 34):
        small = torch.nn.functional.interpolate(originals.float(), size=(size, size), mode="bilinear", antialias=True)
        back = torch.nn.functional.interpolate(small, size=(SIZE, SIZE), mode="bilinear", antialias=True)
        copies.append(back.round().clamp(0, 255).to(torch.uint8))
    a = duplicates.fingerprints([originals])
    for copy in copies:
        pairs = duplicates.near_pairs(duplicates.fingerprints([copy]), a)
        assert {(i, j) for i, j in pairs if i == j} == {(i, i) for i in range(60)}
        assert all(i == j for i, j in pairs)
    assert duplicates.near_pairs(a) == []


def test_every_documented_command_runs(tmp_path, tiny_image_roots):
    """Every `expframe-data` line of the README's and docs' bash blocks, a folder of the README's
    layout standing in for the page's own."""
    blocks = re.findall(r"```bash\n(.*?)```", documentation(), flags=re.S)
    commands = [line.strip() for b in blocks for line in b.splitlines() if line.startswith("expframe-data")]
    assert len(commands) >= 2
    for i, command in enumerate(commands):
        args = [
            f"dataset.root={tiny_image_roots['xray']}" if a.startswith("dataset.root=") else a
            for a in shlex.split(command)[1:]
        ]
        code, stdout, stderr = run(*args, "--out", str(tmp_path / str(i)))
        assert code == 0, f"{command}\n{stderr}"
        assert (tmp_path / str(i) / data_report.SUMMARY_FILE).is_file() and "report in" in stdout


def test_a_class_missing_from_a_split_is_said_not_fatal(tmp_path):
    """MVTec's layout read as a folder: train/ holds good images only, so the defect class has no
    training sample; the report says so where a ratio or a weight would divide by zero."""
    rng = np.random.default_rng(1)
    for split, folder, n in (("train", "good", 12), ("test", "good", 4), ("test", "crack", 3)):
        (tmp_path / "data" / split / folder).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(picture(rng)).save(tmp_path / "data" / split / folder / f"{i}.png")
    code, stdout, stderr = run(
        "dataset=image_folder",
        f"dataset.root={tmp_path / 'data'}",
        "dataset.classes={good: 0, _other_: 1}",
        "--out",
        str(tmp_path / "out"),
    )
    assert code == 0, stderr
    report = json.loads((tmp_path / "out" / data_report.REPORT_FILE).read_text())
    assert report["classes"]["train+val"]["imbalance"] is None and report["classes"]["test"]["imbalance"] == 4 / 3
    assert report["class_weights_balanced"] is None and "no training sample" in report["class_weights_unweighable"]
    assert "a class is missing" in stdout


def test_thousands_of_identical_images_are_one_group_found_by_digest():
    """3,000 blank images (a scanner's empty frames): identical copies are matched by digest, so the
    pairwise search sees one image, not 4.5 M pairs; the pictures beside them stay apart."""
    import time

    rng = np.random.default_rng(5)
    pictures = torch.from_numpy(np.stack([picture(rng) for _ in range(5)]))[:, None]
    blank = torch.zeros(3000, 1, SIZE, SIZE, dtype=torch.uint8)
    train = duplicates.fingerprints([torch.cat([blank[:2000], pictures[:3]])])
    test = duplicates.fingerprints([torch.cat([blank[2000:], pictures[3:]])])
    start = time.perf_counter()
    found = duplicates.groups({"train": train, "test": test})
    leaked = duplicates.leaks({"train": train, "test": test})
    assert time.perf_counter() - start < 5
    assert len(found) == 1 and found[0].identical and len(found[0].members) == 3000
    assert found[0].splits == ["test", "train"]
    assert leaked == [duplicates.Leak("test", "train", identical=1000, near=0)]
