"""Result files are written to a temporary name and renamed, so a killed run never leaves half a file."""

import csv
import errno
import io
import json
import math
import os
import tempfile
from pathlib import Path

from expframe.errors import ConfigError


def write_atomic(path: Path, data: str | bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb" if isinstance(data, bytes) else "w") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _json_safe(value: object) -> object:
    """NaN and inf are not JSON: a missing figure is null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    return value


def write_json(path: Path, data: dict) -> None:
    write_atomic(path, json.dumps(_json_safe(data), indent=2) + "\n")


def write_csv(path: Path, rows: list[dict]) -> None:
    """Every column any row has, in first-seen order (a resumed run's older rows may lack a newer
    figure: its cells stay empty)."""
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(dict.fromkeys(k for row in rows for k in row)))
        writer.writeheader()
        writer.writerows(rows)
    write_atomic(path, buf.getvalue())


# bytes of one name in a path: what Linux file systems allow
NAME_MAX = 255


def check_writable(key: str, where: str) -> None:
    """The output folder must be creatable: its nearest existing ancestor a folder we can write to
    (probed with a temporary file, since root passes every permission check but a read-only mount)."""
    path = Path(where).absolute()
    too_long = next((part for part in path.parts if len(part.encode()) > NAME_MAX), None)
    if too_long is not None:
        raise ConfigError(
            key, where, f"holds a name of {len(too_long.encode())} bytes; the file system allows {NAME_MAX}"
        )
    ancestor = next(p for p in (path, *path.parents) if p.exists())
    if not ancestor.is_dir():
        raise ConfigError(key, where, f"cannot be created: {ancestor} is a file")
    try:
        with tempfile.TemporaryFile(dir=ancestor):
            pass
    except OSError as e:
        raise ConfigError(key, where, f"cannot be created: {ancestor} is not writable ({e.strerror})") from None


# what a folder that cannot take the run's files raises: full, over quota, read-only, refused, a file
# over the process's size limit, a name too long
OUTPUT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG, errno.ENAMETOOLONG}


def output_failure(error: BaseException, folder: Path | None = None) -> str | None:
    """One line for a write the file system refused (here or as the cause of `error`), else None."""
    while error is not None and not isinstance(error, OSError):
        error = error.__cause__ or error.__context__
    if not isinstance(error, OSError) or error.errno not in OUTPUT_ERRNOS:
        return None
    where = f" {error.filename}" if error.filename else f" into {folder}" if folder else ""
    return f"cannot write{where}: {error.strerror} (nothing half-written is left that looks finished)"
