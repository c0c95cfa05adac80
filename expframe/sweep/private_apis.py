"""Every private API of Hydra, its Optuna plugin and Python that expframe relies on, fenced here: each
name below says what it works around, and tests/test_private_apis.py fails when the upstream
behaviour it relies on changes (a Hydra or Python upgrade then fails CI here, not in a user's sweep).

- `BasicSweeper` (hydra._internal.core_plugins): Hydra exports no base class for a sweeper that keeps
  the basic sweeper's behaviour; compose_once.py subclasses it, expands the grid with its
  `_parse_config` and `split_arguments`, replaces its `sweep` loop (to run only the points the sweep
  folder lacks; it saves multirun.yaml and raises a job's exception as upstream does) and swaps its
  config loader's `load_sweep_config` so each job's config is composed once (upstream composes twice
  per job: once to check the batch, once to launch it).
- `optuna_params_from_overrides` (hydra_optuna_sweeper._impl): the plugin's own parser of a search
  space, so a resumed grid study queues exactly the points the plugin would ask for.
- `raised_in`: Hydra raises a plain ValueError for a misused flag (`--resolve` without `--cfg`), and
  the Optuna plugin's `study.best_trial` a plain ValueError when no trial completed; the frame that
  raised it (`_run_hydra`, `best_trial`) is the only way to tell them from a bug's ValueError.
- `run_exit_handlers` (atexit._run_exitfuncs): Python has no public way to run the exit handlers
  and then skip the interpreter's teardown of ~3,000 modules (0.25 s after every command).
"""

import atexit

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

__all__ = ["BasicSweeper", "HYDRA_ARGUMENT_FRAME", "optuna_params_from_overrides", "raised_in", "run_exit_handlers"]

# the function of hydra._internal.utils that rejects flag combinations with a ValueError
HYDRA_ARGUMENT_FRAME = "_run_hydra"


def raised_in(exc: BaseException, function: str, last_frame_only: bool = False) -> bool:
    """Whether `function` is on the traceback of `exc` (or is its innermost frame)."""
    tb, names = exc.__traceback__, []
    while tb is not None:
        names.append(tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    return bool(names) and (names[-1] == function if last_frame_only else function in names)


def optuna_params_from_overrides(params: list[str]) -> tuple[dict, dict]:
    """(distributions, fixed values) as the Optuna plugin reads `key=choice(...)` overrides.
    Imported when called: it imports Optuna (~0.5 s), which a grid study pays anyway."""
    from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides

    distributions, fixed, _ = create_params_from_overrides(params)
    return distributions, fixed


def run_exit_handlers() -> None:
    """The handlers `atexit.register` collected (logging's flush, multiprocessing's clean-up), now."""
    atexit._run_exitfuncs()
