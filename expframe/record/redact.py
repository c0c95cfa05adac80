"""Passwords out of everything a run writes: students share and commit their run folders.

A storage URL typed on the command line (`postgresql://user:password@host/db`) would be copied by
Hydra into every job's `.hydra/` files and the sweep's `multirun.yaml`, and printed by the Optuna
plugin. Better still is not to type it: `hydra.sweeper.storage='${oc.env:EXPFRAME_STORAGE}'`
is saved as written, the interpolation, and resolved only when the study opens.
"""

import logging
import re
from pathlib import Path

from expframe.record.atomic import write_atomic
from expframe.record.files import HYDRA_DIR, MULTIRUN_FILE

# scheme://user:PASSWORD@host: as SQLAlchemy parses a URL, the password runs to the next `@` and may
# hold `/`, spaces and percent-escapes; masked up to that `@` on the same line
URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s:/@'\"]+:)([^@\n]+)(@)", re.IGNORECASE)
HYDRA_FILES = ("hydra.yaml", "overrides.yaml", "config.yaml")


def masked(text: str) -> str:
    return URL_PASSWORD.sub(r"\1***\3", text)


def mask_file(path: Path) -> None:
    """Rewritten, atomically, only when it holds a password."""
    try:
        text = path.read_text()
    except OSError:
        return
    clean = masked(text)
    if clean != text:
        write_atomic(path, clean)


def mask_run_folder(run_dir: Path, sweep_dir: Path | None = None) -> None:
    for name in HYDRA_FILES:
        mask_file(run_dir / HYDRA_DIR / name)
    if sweep_dir is not None:
        mask_file(sweep_dir / MULTIRUN_FILE)


class MaskPasswords(logging.Filter):
    """On a logger: its records' messages with URL passwords masked, on the console and in log files."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if URL_PASSWORD.search(message):
            record.msg, record.args = masked(message), None
        return True
