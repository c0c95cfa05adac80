"""The end-of-sweep report, prepared while the sweep runs: a child process started with the sweep
imports what the report needs (pandas, scipy.stats, matplotlib, seaborn) and composes the project's
defaults while the parent process is still importing torch and composing its first job, on the
core that single-threaded start-up leaves idle. It then waits, blocked on a pipe, using no CPU
while jobs are timed; when the sweep ends it writes the tables and figures and answers.

`python -m expframe.sweep.report_worker` reads one JSON line `{"paths": [...], "out": "..."}` and writes
one back: `{"markdown": "..."}` or `{"error": "..."}`. It runs at the lowest CPU priority, so if
its start-up is ever still running when a job's first epoch starts, it yields the cores to the
job (and expframe's contention check would flag that epoch).
"""

import atexit
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

log = logging.getLogger("expframe")


def warm_up() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401
    import pandas  # noqa: F401
    import seaborn  # noqa: F401
    from scipy import stats  # noqa: F401

    # deferred for start-up time: the sweep's main process imports this module for `Worker`, and only
    # the worker process needs the report (numpy, 0.2 s)
    from expframe.report import summary as report

    report.project_defaults()
    _first_figure()


def _first_figure() -> None:
    """A process's first table and figure import tabulate and jinja2, load fonts and fill
    matplotlib's and seaborn's caches: spend that here, on throw-away ones, not in the report."""
    import io

    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    frame = pd.DataFrame({"variant": ["a", "a", "b"], "value": [0.1, 0.2, 0.3]})
    frame.to_markdown(index=False)  # tabulate and jinja2, the tables' first use
    frame.to_latex(index=False)
    fig, ax = plt.subplots(layout="constrained")
    sns.pointplot(data=frame, y="variant", x="value", errorbar=("pi", 100), linestyle="none", ax=ax)
    sns.lineplot(data=frame, x="value", y="value", hue="variant", ax=ax)
    ax.set_yscale("log")
    ax.legend(bbox_to_anchor=(1.02, 1), loc="upper left", fontsize=8)
    fig.savefig(io.BytesIO(), dpi=110, format="png", pil_kwargs={"compress_level": 1})
    plt.close(fig)


def serve() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the sweep, which then asks for its report
    os.nice(19)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    warm_up()
    line = sys.stdin.readline()
    if not line:  # the sweep ended without a report (report.auto=false, Ctrl-C, an error)
        return
    request = json.loads(line)
    try:
        from expframe.report.summary import report  # loaded by warm_up: a lookup, not an import

        markdown = report([Path(p) for p in request["paths"]], Path(request["out"]), fork_painters=True)
        answer = {"markdown": markdown}
    except (Exception, SystemExit) as e:
        answer = {"error": str(e)}
    sys.stdout.write(json.dumps(answer) + "\n")
    sys.stdout.flush()
    logging.shutdown()
    os._exit(0)  # the answer is out; tearing down pandas and matplotlib would only keep the sweep waiting


class Worker:
    """The parent's handle: `start()` at the beginning of a sweep, `report()` at its end."""

    process: subprocess.Popen | None = None

    @classmethod
    def start(cls) -> None:
        try:
            cls.process = subprocess.Popen(
                [sys.executable, "-m", "expframe.sweep.report_worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
        except OSError as e:
            log.info("report worker not started (%s): the report is written in this process", e)
            cls.process = None
            return
        atexit.register(cls.stop)

    @classmethod
    def report(cls, paths: list[Path], out: Path) -> str | None:
        """The report's markdown, written by the worker; None when there is no worker to ask (the
        caller then writes it in this process). A report that failed raises SystemExit, as report()."""
        process, cls.process = cls.process, None
        if process is None or process.poll() is not None:
            return None
        try:
            process.stdin.write(json.dumps({"paths": [str(p) for p in paths], "out": str(out)}) + "\n")
            process.stdin.close()
            answer_line = process.stdout.readline()
        except OSError:
            return None
        try:
            answer = json.loads(answer_line)
        except ValueError:
            return None
        if "error" in answer:
            raise SystemExit(answer["error"])
        return answer["markdown"]

    @classmethod
    def stop(cls) -> None:
        process, cls.process = cls.process, None
        if process is not None and process.poll() is None:
            process.stdin.close()
            process.wait()

    @classmethod
    def cancel(cls) -> None:
        """A sweep refused before its first job: the worker (still importing pandas, ~5 s) is ended,
        not waited for."""
        process, cls.process = cls.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()


if __name__ == "__main__":
    serve()
