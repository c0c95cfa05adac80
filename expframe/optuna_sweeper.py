"""Hydra's Optuna sweeper, made resumable: storage folder, stale trials, grid points left to run.

Selected by the hparams_search presets (`hydra.sweeper._target_`; registered with Hydra by
expframe.cli). The study is prepared inside the sweeper because Hydra 1.4 refuses a sweeper config
changed after composition.
"""

import functools
import itertools
import logging
import os
import random
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
from omegaconf import ListConfig

log = logging.getLogger("expframe")

WORKER_PREFIX = "worker:"
# A worker registered on another host is presumed alive for this long (its pid cannot be checked).
REMOTE_WORKER_TTL_S = 24 * 3600
STORAGE_ATTEMPTS = 5


class ResumableOptunaSweeper(OptunaSweeper):
    def sweep(self, arguments: list[str]) -> None:
        impl = self.sweeper
        impl._configure_trials = _numbering_trials(impl._configure_trials)
        if not impl.storage:
            return super().sweep(arguments)
        if str(impl.storage).startswith("sqlite:///"):
            Path(str(impl.storage)[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        study = self._study()
        others = {k: v for k, v in study.user_attrs.items() if k.startswith(WORKER_PREFIX) and k != _worker_key()}
        if not any(_alive(k, v) for k, v in others.items()):
            fail_stale_trials(study)
        study.set_user_attr(_worker_key(), time.time())
        try:
            if isinstance(impl.sampler, functools.partial) and impl.sampler.func.__name__ == "GridSampler":
                params = [f"{k}={v}" for k, v in (impl.params or {}).items()] + list(arguments)
                impl.n_trials = min(impl.n_trials, queue_grid_points_left(study, params))
                if impl.n_trials == 0:
                    log.info("every grid point of study %s is COMPLETE: nothing to run", study.study_name)
                    return None
            return super().sweep(arguments)
        finally:
            study.set_user_attr(_worker_key(), None)

    def _study(self):
        """Workers started together on a new database race to create its schema; the loser retries."""
        import optuna
        from sqlalchemy.exc import SQLAlchemyError

        direction = self.sweeper.direction
        directions = list(direction) if isinstance(direction, ListConfig | list) else [direction]
        for attempt in range(STORAGE_ATTEMPTS):
            try:
                return optuna.create_study(
                    study_name=self.sweeper.study_name,
                    storage=self.sweeper.storage,
                    directions=[str(d).split(".")[-1] for d in directions],
                    load_if_exists=True,
                )
            except SQLAlchemyError:
                if attempt == STORAGE_ATTEMPTS - 1:
                    raise
                time.sleep(0.2 + random.random())


def _numbering_trials(configure: Callable) -> Callable:
    """Each job gets `trial=<Optuna trial number>`: its folder, metrics.json and the report name the
    trial (job numbers restart with every command, trial numbers go on across a resumed study)."""

    @functools.wraps(configure)
    def with_numbers(trials: list, *args: Any) -> list[list[str]]:
        overrides = configure(trials, *args)
        return [[*o, f"trial={t.number}"] for t, o in zip(trials, overrides, strict=True)]

    return with_numbers


def _worker_key() -> str:
    return f"{WORKER_PREFIX}{socket.gethostname()}:{os.getpid()}"


def _alive(key: str, registered_at: float | None) -> bool:
    if registered_at is None:
        return False
    host, _, pid = key[len(WORKER_PREFIX) :].rpartition(":")
    if host != socket.gethostname():
        return time.time() - registered_at < REMOTE_WORKER_TTL_S
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError):
        return False
    except PermissionError:
        return True
    return True


def fail_stale_trials(study) -> None:
    """Optuna leaves the trials of a killed sweep RUNNING forever; with no live worker, fail them."""
    from optuna.trial import TrialState

    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(trial.number, state=TrialState.FAIL)
        log.warning("trial %d was left RUNNING by an interrupted sweep: marked FAIL", trial.number)


def queue_grid_points_left(study, params: list[str]) -> int:
    """Queue each grid point without a COMPLETE trial and return how many there are.

    Left alone, the plugin asks for the whole grid again and Optuna's GridSampler then re-runs
    finished points and never the failed ones.
    """
    from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides
    from optuna.trial import TrialState

    distributions, _, _ = create_params_from_overrides(params)
    names = list(distributions)
    complete = {
        tuple(t.params.get(n) for n in names) for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    }
    waiting = {
        tuple(t.system_attrs.get("fixed_params", {}).get(n) for n in names)
        for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    }
    left = [p for p in itertools.product(*(distributions[n].choices for n in names)) if p not in complete]
    for point in left:
        if point not in waiting:
            study.enqueue_trial(dict(zip(names, point, strict=True)))
    log.info("grid study %s: %d points complete, %d to run", study.study_name, len(complete), len(left))
    return len(left)
