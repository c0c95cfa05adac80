"""k-fold cross-validation: the folds, one initial weight set, fold means that a recomputation from
the per-fold files gives, the report's distinction between folds and seeds, bad input."""

import csv
import json
import statistics

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from expframe.config.validate import validate
from expframe.data import load
from expframe.errors import ConfigError
from expframe.report.format import number
from expframe.sweep.cv import check_folds, fold_indices
from tests.conftest import make_cfg, run_like_hydra


def test_folds_are_stratified_disjoint_and_cover_the_training_set():
    labels = load(make_cfg("dataset=digits").dataset, torch.device("cpu")).train_y
    folds = fold_indices(labels, 5, seed=3)
    validation = torch.cat([va for _, va in folds])
    assert sorted(validation.tolist()) == list(range(len(labels))), "each sample validates exactly once"
    overall = torch.bincount(labels) / len(labels)
    for train, va in folds:
        assert set(train.tolist()).isdisjoint(va.tolist())
        assert len(train) + len(va) == len(labels)
        share = torch.bincount(labels[va], minlength=len(overall)) / len(va)
        assert (share - overall).abs().max() < 0.02, "every fold keeps the class proportions"
    again = fold_indices(labels, 5, seed=3)
    assert all(torch.equal(a[1], b[1]) for a, b in zip(folds, again, strict=True)), "one seed, one set of folds"
    assert not torch.equal(fold_indices(labels, 5, seed=4)[0][1], folds[0][1])


@pytest.fixture(scope="module")
def cv_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("cv") / "job"
    metrics = run_like_hydra(run, "dataset=digits", "epochs=2", "cv.folds=3", "logging.tensorboard=true")
    return run, metrics


def test_one_model_per_fold_from_the_same_initial_weights(cv_run):
    run, metrics = cv_run
    folds = [json.loads((run / f"fold_{i}" / "metrics.json").read_text()) for i in range(3)]
    assert {f["init_hash"] for f in folds} == {metrics["init_hash"]}
    assert all(
        (run / f"fold_{i}" / "history.csv").exists() and (run / f"fold_{i}" / "model.pt").exists() for i in range(3)
    )
    assert metrics["cv_folds"] == 3 and metrics["status"] == "ok"


def test_fold_means_and_stds_equal_a_recomputation_from_the_fold_files(cv_run):
    run, metrics = cv_run
    for key in ("val_acc", "test_acc", "epoch_time_s", "energy_kwh"):
        values = [json.loads((run / f"fold_{i}" / "metrics.json").read_text())[key] for i in range(3)]
        assert metrics[f"{key}_folds"] == values
        assert metrics[key] == pytest.approx(statistics.fmean(values))
        assert metrics[f"{key}_std"] == pytest.approx(statistics.stdev(values))
    last_val = [
        float(list(csv.DictReader((run / f"fold_{i}" / "history.csv").open()))[-1]["val_acc"]) for i in range(3)
    ]
    assert metrics["val_acc"] == pytest.approx(statistics.fmean(last_val))


def test_tensorboard_has_the_cv_scores_per_fold_and_their_mean(cv_run):
    run, metrics = cv_run
    events = EventAccumulator(str(run)).Reload()
    assert [e.value for e in events.Scalars("cv/val_acc")] == pytest.approx(metrics["val_acc_folds"], rel=1e-6)
    assert events.Scalars("cv/val_acc_mean")[-1].value == pytest.approx(metrics["val_acc"], rel=1e-6)
    assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams"), "one HParams row per job"
    fold = EventAccumulator(str(run / "fold_0")).Reload()
    assert fold.Scalars("acc/val")[-1].value == pytest.approx(metrics["val_acc_folds"][0], rel=1e-6)
    with pytest.raises(KeyError):
        fold.PluginTagToContent("hparams")


def test_the_report_keeps_folds_and_seeds_apart(cv_run, tmp_path):
    from expframe.report.summary import report

    run, metrics = cv_run
    md = report([run], tmp_path / "out", plots=False)
    header, _, row = md.splitlines()[:3]
    cells = [c.strip() for c in row.strip("|").split("|")]
    names = [c.strip() for c in header.strip("|").split("|")]
    assert cells[names.index("n")] == "3 folds"
    shown = cells[names.index("val_acc")]
    assert "±" in shown and number(metrics["val_acc_std"], 2) in shown
    assert "mean ± sd over its folds (n = folds)" in md


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["cv.folds=1"], "cv.folds=1: must be an integer >= 2"),
        (["cv.folds=3", "resume=/tmp/x"], "cannot continue a cross-validated job"),
    ],
)
def test_bad_cv_settings_are_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate(make_cfg(*overrides, "device=cpu"))


def test_more_folds_than_the_rarest_class_has_samples_is_refused():
    labels = torch.tensor([0] * 10 + [1] * 4)
    check_folds(4, labels)
    with pytest.raises(ConfigError, match=r"cv.folds=5: is above the smallest class count \(4 samples of class 1"):
        check_folds(5, labels)


def test_an_optuna_trial_is_pruned_after_a_fold_and_recorded_pruned(tmp_path):
    """A threshold no fold reaches: every trial stops after its first fold, in a real SQLite study."""
    import optuna
    from optuna.trial import TrialState

    from tests.conftest import run_cli_in_process

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    code, err = run_cli_in_process(
        "-m",
        "hparams_search=optuna_tpe_cv",
        "dataset=digits",
        "epochs=1",
        "cv.pruner._target_=optuna.pruners.ThresholdPruner",  # the preset's MedianPruner, replaced
        "~cv.pruner.n_startup_trials",
        "+cv.pruner.lower=0.999",
        "hydra.sweeper.n_trials=2",
        f"hydra.sweeper.storage={storage}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    )
    assert code == 0, err
    study = optuna.load_study(study_name="tpe_cv_digits", storage=storage)
    assert [t.state for t in study.trials] == [TrialState.PRUNED, TrialState.PRUNED]
    assert all(list(t.intermediate_values) == [1] for t in study.trials), "reported after the first fold"
    jobs = sorted((tmp_path / "sweep").glob("*/metrics.json"))
    assert len(jobs) == 2
    for path in jobs:
        metrics = json.loads(path.read_text())
        assert metrics["status"] == "pruned" and len(metrics["val_acc_folds"]) == 1 and metrics["val_acc"] is None
        assert (path.parent / "fold_0").is_dir() and not (path.parent / "fold_1").exists()
    assert "pruned" in (tmp_path / "sweep" / "summary.md").read_text()
