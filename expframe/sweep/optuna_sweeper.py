"""Hydra's Optuna sweeper, made resumable (storage folder, stale trials, grid points left to run)
and able to prune: with `cv.pruner` set, a cross-validated job reports its running mean after every
fold and stops when the pruner says so (the trial is recorded PRUNED).

Selected by the hparams_search presets (`hydra.sweeper._target_`; registered with Hydra by
expframe.cli.entry). The study is prepared inside the sweeper because Hydra 1.4 refuses a sweeper config
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
from omegaconf import ListConfig, OmegaConf

from expframe.build import build
from expframe.errors import ConfigError, short_reason
from expframe.record.folder_lock import process_start
from expframe.record.redact import MaskPasswords, masked
from expframe.sweep.private_apis import optuna_params_from_overrides, raised_in

log = logging.getLogger("expframe")

WORKER_PREFIX = "worker:"
# A worker on another host (its PID cannot be checked) is presumed alive this long after it last
# renewed its registration, which it does with every batch of trials.
REMOTE_WORKER_TTL_S = 6 * 3600
STORAGE_ATTEMPTS = 5


class ResumableOptunaSweeper(OptunaSweeper):
    """The plugin internals used here (tested in tests/test_pure.py): the wrapped implementation
    `self.sweeper`, its attributes `storage`, `sampler`, `params`, `n_trials`, `direction`,
    `study_name`, its method `_configure_trials`, and the plugin's search-space parser (private_apis.py)."""

    def sweep(self, arguments: list[str]) -> None:
        impl = self.sweeper
        plugin_log = logging.getLogger(type(impl).__module__)  # it logs "Storage: <url>"
        if not any(isinstance(f, MaskPasswords) for f in plugin_log.filters):
            plugin_log.addFilter(MaskPasswords())
        configured: list[int] = []
        study = self._study() if impl.storage else None
        node = OmegaConf.select(impl.config, "cv.pruner")
        pruner = build(node) if node is not None else None
        impl._configure_trials = _numbering_trials(impl._configure_trials, configured, study, pruner)
        if study is None:
            return self._sweep(arguments)
        others = {k: v for k, v in study.user_attrs.items() if k.startswith(WORKER_PREFIX) and k != _worker_key()}
        if not any(_alive(k, v) for k, v in others.items()):
            fail_stale_trials(study)
        _register(study)
        try:
            if isinstance(impl.sampler, functools.partial) and impl.sampler.func.__name__ == "GridSampler":
                params = [f"{k}={v}" for k, v in (impl.params or {}).items()] + list(arguments)
                impl.n_trials = min(impl.n_trials, queue_grid_points_left(study, params))
                if impl.n_trials == 0:
                    log.info("every grid point of study %s is COMPLETE: nothing to run", study.study_name)
                    return None
            return self._sweep(arguments)
        except BaseException:
            fail_unfinished(study, configured)
            raise
        finally:
            study.set_user_attr(_worker_key(), None)

    def _sweep(self, arguments: list[str]) -> None:
        """The plugin reads `study.best_trial` at the end, which raises when no trial completed
        (all pruned, or all failed): the trials are recorded, there is just no best one to write."""
        try:
            return super().sweep(arguments)
        except ValueError as e:
            if not raised_in(e, "best_trial"):
                raise
            log.warning("no trial of this study completed (all pruned or failed): no best trial to write")
            return None

    def _study(self):
        """Workers started together on a new database race to create its schema; the loser retries."""
        import optuna
        from sqlalchemy.exc import OperationalError, SQLAlchemyError

        storage = str(self.sweeper.storage)
        check_storage_driver(storage)
        if storage.startswith("sqlite:///"):
            folder = Path(storage[len("sqlite:///") :]).parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise ConfigError(
                    "hydra.sweeper.storage", masked(storage), f"its folder {folder} cannot be created ({e.strerror})"
                ) from None
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
            except SQLAlchemyError as e:
                # the race is on the schema; a server that refused the connection twice is not there
                if attempt == STORAGE_ATTEMPTS - 1 or (isinstance(e, OperationalError) and attempt >= 1):
                    raise unreachable(storage, e) from None
                time.sleep(0.2 + random.random())


def unreachable(storage: str, error: BaseException) -> ConfigError:
    """One line naming the server (host and port) and the database's own reason, the password masked."""
    from sqlalchemy.engine import make_url

    url = make_url(storage)
    where = f"{url.host or 'localhost'}:{url.port or 'default port'}" if url.host is not None else url.database
    reason = masked(short_reason(getattr(error, "orig", None) or error, 160))
    return ConfigError("hydra.sweeper.storage", masked(storage), f"cannot be opened at {where} ({reason})")


DRIVER_PACKAGES = {"psycopg": "pip install -e '.[cluster]' (psycopg 3)", "psycopg2": "pip install psycopg2-binary"}
DRIVER_PACKAGES |= {"mysqldb": "pip install mysqlclient", "pymysql": "pip install pymysql"}


def check_storage_driver(storage: str) -> None:
    """SQLAlchemy imports a database's driver only when the first worker connects, and fails with a
    50-line traceback: the missing package, named before any trial starts."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    shown = masked(storage)
    try:
        dialect = make_url(storage).get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError) as e:
        raise ConfigError("hydra.sweeper.storage", shown, f"is not a database URL SQLAlchemy knows ({e})") from None
    try:
        dialect.import_dbapi()
    except ImportError:
        install = DRIVER_PACKAGES.get(dialect.driver, f"install the {dialect.driver} package")
        raise ConfigError("hydra.sweeper.storage", shown, f"needs the {dialect.driver} driver: {install}") from None


def _numbering_trials(
    configure: Callable, configured: list[int] | None = None, study=None, pruner: Any = None
) -> Callable:
    """Each job gets `trial=<Optuna trial number>`: its folder, metrics.json and the report name the
    trial (job numbers restart with every command, trial numbers go on across a resumed study).
    The numbers are kept in `configured` (the trials this worker runs), and each new batch renews
    the worker's registration in `study` (its heartbeat)."""

    @functools.wraps(configure)
    def with_numbers(trials: list, *args: Any) -> list[list[str]]:
        overrides = configure(trials, *args)
        if configured is not None:
            configured.extend(t.number for t in trials)
        if study is not None:
            _register(study)
        if pruner is not None and trials:
            _prune_with(trials[0].study, pruner)
            ACTIVE_TRIALS.update({t.number: t for t in trials})
        return [[*o, f"trial={t.number}"] for t, o in zip(trials, overrides, strict=True)]

    return with_numbers


# The trials this process's sweep is running, by number, for the jobs it runs itself (the basic
# launcher): a cross-validated job reports its running mean to its trial after every fold.
ACTIVE_TRIALS: dict[int, Any] = {}
PRUNED: set[int] = set()


def report_fold(trial_number: int | None, value: float, step: int) -> bool:
    """True when the trial's pruner says stop. A job without a trial in this process (no Optuna,
    a joblib or submitit worker, a multi-objective study) is never pruned."""
    trial = ACTIVE_TRIALS.get(trial_number)
    if trial is None or len(trial.study.directions) > 1 or value != value:
        return False
    trial.report(value, step)
    if trial.should_prune():
        PRUNED.add(trial_number)
        return True
    return False


def _prune_with(study, pruner) -> None:
    """The study the plugin created gets the configured pruner, and its `tell` records a trial the
    job pruned as PRUNED (the plugin would tell COMPLETE with the job's NaN, which Optuna records FAIL)."""
    from optuna.trial import TrialState

    if getattr(study, "_expframe_pruning", False):
        return
    study.pruner = pruner
    tell = study.tell

    def tell_pruned(trial: Any, values: Any = None, state: Any = None, skip_if_finished: bool = False) -> Any:
        number = trial if isinstance(trial, int) else trial.number
        if number in PRUNED:
            return tell(trial, state=TrialState.PRUNED, skip_if_finished=skip_if_finished)
        return tell(trial, values=values, state=state, skip_if_finished=skip_if_finished)

    study.tell = tell_pruned
    study._expframe_pruning = True


def fail_unfinished(study, numbers: list[int]) -> None:
    """Ctrl-C or a crash of this worker: its trials still RUNNING are told FAIL, not left RUNNING."""
    from optuna.trial import TrialState

    running = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    for number in numbers:
        if number in running:
            study.tell(number, state=TrialState.FAIL)
            log.warning("trial %d was interrupted: marked FAIL", number)


def _worker_key() -> str:
    return f"{WORKER_PREFIX}{socket.gethostname()}:{os.getpid()}"


def _register(study) -> None:
    study.set_user_attr(_worker_key(), {"seen": time.time(), "start": process_start(os.getpid())})


def _alive(key: str, registration: dict | float | None) -> bool:
    """A worker on this host is alive when its PID runs and started when it registered; a worker on
    another host, when it renewed its registration (each batch of trials) within REMOTE_WORKER_TTL_S."""
    if not registration:
        return False
    seen, start = (
        (registration.get("seen"), registration.get("start"))
        if isinstance(registration, dict)
        else (registration, None)
    )
    host, _, pid = key[len(WORKER_PREFIX) :].rpartition(":")
    if host != socket.gethostname():
        return time.time() - float(seen or 0) < REMOTE_WORKER_TTL_S
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError):
        return False
    except PermissionError:
        pass
    return start is None or process_start(int(pid)) == start


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
    from optuna.trial import TrialState

    distributions, _ = optuna_params_from_overrides(params)
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
