"""Early stopping: the epoch it stops, the weights it keeps, the line it prints."""

import pytest
import torch

from expframe.cli.rescore import rescore
from expframe.record import catalogue as figures
from expframe.train.run import train
from tests.conftest import make_cfg, run_like_hydra, trained


def test_a_stalled_validation_loss_stops_the_run_after_patience_epochs(tmp_path):
    m = trained(
        make_cfg(
            "dataset=digits",
            "epochs=20",
            "optimizer.lr=1e-7",
            "early_stopping.patience=3",
            "early_stopping.min_delta=0.01",
        ),
        tmp_path,
    )
    assert (m["stopped_epoch"], m["best_epoch"], m["epochs_run"]) == (4, 1, 4)
    assert m["status"] == "ok" and len((tmp_path / "history.csv").read_text().splitlines()) == 5
    assert "stopped early at epoch 4 (best 1)" in figures.summary_line(m)


def test_without_patience_the_run_goes_to_the_end_and_names_its_best_epoch(tmp_path):
    m = trained(make_cfg("dataset=digits", "epochs=3", "optimizer=adam"), tmp_path)
    assert m["stopped_epoch"] is None and m["epochs_run"] == 3 and 1 <= m["best_epoch"] <= 3
    assert "stopped early" not in figures.summary_line(m)


def test_restore_best_scores_the_best_epochs_weights(tmp_path):
    """Adam at lr 0.05 on digits over-fits: the validation loss turns up, the run stops, and its test
    figures and model.pt are those of a plain run trained for exactly the best epoch's count."""
    common = ("dataset=digits", "optimizer=adam", "optimizer.lr=0.05", "model.width=256")
    stopped = train(make_cfg(*common, "epochs=40", "early_stopping.patience=2"), tmp_path / "stopped")
    best = stopped.metrics["best_epoch"]
    assert stopped.metrics["stopped_epoch"] == best + 2
    plain = train(make_cfg(*common, f"epochs={best}"), tmp_path / "plain")
    assert stopped.metrics["test_acc"] == plain.metrics["test_acc"]
    saved = torch.load(tmp_path / "stopped" / "model.pt", weights_only=True)
    assert all(torch.equal(saved[k], v.cpu()) for k, v in plain.model.state_dict().items())


def test_model_pt_of_a_stopped_run_rescores_to_its_test_acc(tmp_path):
    m = run_like_hydra(
        tmp_path, "dataset=digits", "optimizer=adam", "optimizer.lr=0.05", "epochs=40", "early_stopping.patience=2"
    )
    assert rescore(tmp_path)["test_acc"] == m["test_acc"]


def test_an_unmonitorable_figure_is_refused():
    from expframe.config.validate import validate
    from expframe.errors import ConfigError

    with pytest.raises(ConfigError, match="early_stopping.monitor='lr': must be one of train_loss"):
        validate(make_cfg("early_stopping.monitor=lr", "device=cpu"))
