"""SIGTERM recorded like Ctrl-C: what SLURM sends before it kills a preempted or timed-out job, and
what `kill` sends. Without a handler Python dies at once and the run leaves no metrics.json."""

import signal
import threading


class Terminated(KeyboardInterrupt):
    """Raised in the main thread on SIGTERM: every `except KeyboardInterrupt` that keeps a run's
    finished epochs keeps them for SIGTERM as well."""


# the exit status a shell gives a process ended by each signal (128 + its number)
EXIT_STATUS = {signal.SIGINT: 130, signal.SIGTERM: 143}


# the signal that stopped this process's work, once one has (a Terminated may be caught deep in the
# epoch loop, which records the run as interrupted and returns normally)
received: list[int] = []


def _raise_terminated(signum: int, frame: object) -> None:
    received.append(signum)
    raise Terminated(f"received signal {signal.Signals(signum).name}")


def install() -> None:
    """From the main thread only (Python's rule for signal handlers)."""
    received.clear()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)


def exit_status() -> int:
    """130 for Ctrl-C, 143 once a SIGTERM was received."""
    return EXIT_STATUS[signal.SIGTERM] if signal.SIGTERM in received else EXIT_STATUS[signal.SIGINT]
