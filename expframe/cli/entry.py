"""Command-line error reporting: a user error is one line on stderr and exit status 1."""

import os
import sys
import threading
from collections.abc import Callable

from hydra.core.plugins import Plugins
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from expframe.errors import ConfigError
from expframe.measure import signals
from expframe.measure.energy import warm_up_for
from expframe.record.atomic import output_failure
from expframe.sweep.compose_once import ComposeOnceSweeper
from expframe.sweep.optuna_sweeper import ResumableOptunaSweeper
from expframe.sweep.private_apis import HYDRA_ARGUMENT_FRAME, raised_in, run_exit_handlers
from expframe.sweep.report_worker import Worker
from expframe.sweep.slurm_launcher import SqueueSlurmLauncher

USER_ERRORS = (ConfigError, HydraException, OmegaConfBaseException)


def one_line(exc: BaseException) -> str:
    """Hydra's messages span lines (lists of options are tab-indented); fold them into one."""
    text = str(exc).split("Config search path")[0]
    if isinstance(exc.__cause__, OmegaConfBaseException) and str(exc.__cause__) not in text:
        text += f"\n({exc.__cause__})"
    out = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        listed = raw.startswith("\t") and out and not out.endswith(":")
        out = f"{out}{',' if listed else ''} {line}" if out else line
    return out


def run_cli(main: Callable[[], object]) -> None:
    """Registers expframe's sweeper and runs `main`, turning user errors into one line.

    Hydra would print composition errors over several lines plus a hint.
    HYDRA_FULL_ERROR=1 set by the user keeps Hydra's full report for debugging.
    """
    Plugins.instance().register(ResumableOptunaSweeper)
    Plugins.instance().register(ComposeOnceSweeper)
    Plugins.instance().register(SqueueSlurmLauncher)
    signals.install()
    warm_up_for(sys.argv[1:])
    if wants_report(sys.argv[1:]):
        Worker.start()
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        main()
        return
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        main()
    except USER_ERRORS as e:
        sys.exit(f"error: {one_line(e)}")
    except KeyboardInterrupt:
        status = signals.exit_status()
        print("terminated (SIGTERM)" if status == 143 else "interrupted", file=sys.stderr)
        sys.exit(status)
    except ValueError as e:
        if not _flag_misuse(e):
            raise
        sys.exit(f"error: {e}")
    except OSError as e:  # Hydra's own files (.hydra/, the job log) on a full or read-only disk
        if output_failure(e) is None:
            raise
        sys.exit(f"error: {output_failure(e)}")


def exit_without_teardown() -> None:
    """Ends a command that succeeded without the interpreter's teardown of ~3,000 modules (torch,
    pandas, matplotlib): 0.25 s a user waits for after every command, measured by nothing. Every
    file a run writes is complete by now (written then renamed); the exit handlers (logging's flush,
    multiprocessing's clean-up) still run.
    Inside a process started for something else (a notebook's `%run`, a test's runpy) or under a
    tool that runs the script and then writes its own results (`python -m cProfile`) it returns."""
    tool = getattr(sys.modules["__main__"], "__spec__", None) is not None
    if tool or sys.orig_argv[-len(sys.argv) :] != sys.argv:
        return
    if any(t is not threading.main_thread() and not t.daemon for t in threading.enumerate()):
        return  # joblib's executor: its threads stop through hooks only the interpreter's shutdown runs
    run_exit_handlers()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def wants_report(argv: list[str]) -> bool:
    """A sweep whose command line does not turn the automatic report off, and that trains."""
    if not {"-m", "--multirun"} & set(argv) or {"--help", "-h", "--cfg", "-c", "--info", "--hydra-help"} & set(argv):
        return False
    return not any(a.lower() in ("report.auto=false", "report.auto=0") for a in argv)


def _flag_misuse(exc: ValueError) -> bool:
    """Hydra rejects flag combinations (`-m --cfg job`, `--resolve` alone) with a ValueError raised in
    its argument handling; a ValueError from anywhere else is a bug and keeps its traceback."""
    return raised_in(exc, HYDRA_ARGUMENT_FRAME, last_frame_only=True)
