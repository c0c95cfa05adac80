"""Each private API expframe relies on (expframe/sweep/private_apis.py), held to the upstream behaviour
it relies on: a Hydra, Optuna or Python upgrade that changes one fails here, not in a user's sweep."""

import inspect
import subprocess
import sys

import optuna
import pytest
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.core_plugins.basic_launcher import BasicLauncher

from expframe.sweep.private_apis import (
    HYDRA_ARGUMENT_FRAME,
    BasicSweeper,
    optuna_params_from_overrides,
    raised_in,
)
from tests.conftest import ROOT, run_cli_in_process


def test_the_basic_sweeper_expands_its_grid_and_its_launcher_composes_each_job():
    """compose_once.py plans the grid the basic sweeper expands (`_parse_config` + `split_arguments`),
    saves multirun.yaml and raises a job's exception as upstream's `sweep` does, and hands the
    launcher its configs through `load_sweep_config(master_config=..., sweep_overrides=...)`."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    upstream = inspect.getsource(BasicSweeper.sweep)
    assert "self._parse_config()" in upstream and 'OmegaConf.save(self.config, sweep_dir / "multirun.yaml")' in upstream
    assert "_ = r.return_value" in upstream
    overrides = OverridesParser.create().parse_overrides(["optimizer=sgd,adam", "seed=0,1", "epochs=2"])
    [batch] = BasicSweeper.split_arguments(overrides, None)
    assert batch[0] == ["optimizer=sgd", "seed=0", "epochs=2"] and len(batch) == 4
    assert "load_sweep_config(" in inspect.getsource(BasicLauncher.launch)
    params = inspect.signature(ConfigLoaderImpl.load_sweep_config).parameters
    assert {"master_config", "sweep_overrides"} <= set(params)


def test_a_misused_hydra_flag_is_a_value_error_raised_in_its_argument_handling():
    import hydra._internal.utils as hydra_utils

    assert "raise ValueError" in inspect.getsource(getattr(hydra_utils, HYDRA_ARGUMENT_FRAME))
    status, err = run_cli_in_process("--resolve")
    assert status == 1 and err.strip().startswith("error: ") and len(err.strip().splitlines()) == 1, err


def test_a_study_without_a_complete_trial_raises_in_best_trial():
    study = optuna.create_study()
    study.tell(study.ask(), state=optuna.trial.TrialState.FAIL)
    with pytest.raises(ValueError) as raised:
        _ = study.best_trial
    assert raised_in(raised.value, "best_trial")
    assert not raised_in(raised.value, "best_trial_of_something_else")


def test_the_optuna_plugin_parses_a_search_space_into_distributions():
    distributions, fixed = optuna_params_from_overrides(["model.depth=choice(1,2)", "epochs=3"])
    assert list(distributions["model.depth"].choices) == [1, 2] and fixed == {"epochs": "3"}


def test_exit_handlers_run_once_when_called_early():
    """exit_without_teardown runs the handlers, then os._exit: they must run now, and not again."""
    code = (
        "import atexit; from expframe.sweep.private_apis import run_exit_handlers; "
        "atexit.register(print, 'handler'); run_exit_handlers(); print('after')"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["handler", "after"]
