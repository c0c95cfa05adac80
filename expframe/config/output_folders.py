"""Where a run or sweep writes: folders of their own, names that are names, nothing outside.

Checked before Hydra creates anything (the run's callbacks), then a run's folder is locked for this
process (expframe.record.folder_lock): a refused command leaves no folder, and no finished run is
replaced. A sweep folder is not locked: its jobs are claimed one by one (expframe.sweep.claims).
"""

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from expframe.errors import ConfigError
from expframe.record import folder_lock
from expframe.record.atomic import check_writable
from expframe.record.files import CLAIMS_DIR, HYDRA_DIR, LOCK_FILE, METRICS_FILE, MODEL_FILE, MULTIRUN_FILE


def check_output_folder(key: str, where: object) -> Path:
    """A run or sweep folder of its own: named, not the project folder or one above it (its results
    would mix with the project's files and a report would read every run below it), creatable."""
    if not isinstance(where, str) or not where.strip():
        raise ConfigError(key, where, "must name a folder (empty would write into the current folder)")
    path = Path(where).absolute().resolve()
    here = Path.cwd().resolve()
    if path == here or path in here.parents:
        raise ConfigError(
            key,
            where,
            f"is {'the current folder' if path == here else 'above the current folder'}: name a folder of its own",
        )
    check_writable(key, where)
    return path


def check_name(key: str, name: object) -> None:
    """Names that Hydra or Optuna turn into file names (the job's log, the study's database)."""
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(key, name, "must be a non-empty name")
    if "/" in name or "\\" in name or name in (".", "..") or "\0" in name:
        raise ConfigError(key, name, "must be a name, not a path (no '/', '\\\\', '.' or '..')")
    if len(name.encode()) > 200:
        raise ConfigError(key, name, f"is {len(name.encode())} bytes long; at most 200")


def check_sweep_subdir(cfg: DictConfig) -> None:
    """Job folders stay inside the sweep folder, whatever `hydra.sweep.subdir` says (checked as written,
    before the job number it names exists)."""
    raw = OmegaConf.to_container(cfg.hydra.sweep, resolve=False).get("subdir")
    if not isinstance(raw, str) or not raw.strip() or raw.startswith("/") or ".." in raw.replace("${", "").split("/"):
        raise ConfigError("hydra.sweep.subdir", raw, "must be a relative folder name inside the sweep folder")


def check_hydra_files(cfg: DictConfig) -> None:
    """Hydra's own files (its `.hydra/` copy, the job log) stay in the job's folder."""
    subdir = OmegaConf.select(cfg, "hydra.output_subdir")
    if subdir is not None:
        check_name("hydra.output_subdir", subdir)
    for logging_key in ("hydra.job_logging", "hydra.hydra_logging"):
        handlers = OmegaConf.select(cfg, f"{logging_key}.handlers") or {}
        for name in handlers:
            raw = OmegaConf.to_container(handlers[name], resolve=False).get("filename")
            inside = isinstance(raw, str) and raw.startswith("${hydra.runtime.output_dir}/") and ".." not in raw
            if raw is not None and not inside:
                key = f"{logging_key}.handlers.{name}.filename"
                raise ConfigError(key, raw, "must be a file in the job's folder (${hydra.runtime.output_dir}/<name>)")


def check_new_run_folder(key: str, path: Path) -> None:
    """Finished results are never overwritten: a folder that holds a run is continued with resume=."""
    held = next((name for name in (METRICS_FILE, MODEL_FILE, str(HYDRA_DIR)) if (path / name).exists()), None)
    if held is not None:
        raise ConfigError(
            key, str(path), f"already holds a run ({held}): choose another folder, or resume={path} to continue it"
        )
    check_own_folder(key, path)


def check_own_folder(key: str, path: Path) -> None:
    """An existing folder that holds other files (`hydra.run.dir=conf`) would get a run's files mixed in."""
    others = sorted(p.name for p in path.iterdir() if p.name != LOCK_FILE) if path.is_dir() else []
    if others:
        raise ConfigError(key, str(path), f"holds other files ({', '.join(others[:3])}): name a new or empty folder")


def check_sweep_folder(key: str, path: Path, optuna: bool) -> None:
    """A folder that holds a sweep's jobs is resumed (expframe.sweep.resume matches its jobs to the
    grid's points); anything else must be a new or empty folder. An Optuna study resumes through its
    storage, in a new sweep folder: its trials are not points a folder can be matched by."""
    jobs = [p.name for p in path.iterdir() if (p / HYDRA_DIR).is_dir()] if path.is_dir() else []
    # a sweep that claimed its first points has .claims/ before any job folder or multirun.yaml
    if not jobs and not (path / MULTIRUN_FILE).is_file() and not (path / CLAIMS_DIR).is_dir():
        check_own_folder(key, path)
    elif optuna:
        raise ConfigError(
            key,
            str(path),
            f"already holds a sweep ({len(jobs)} job folder(s)): an Optuna study resumes through its storage "
            "(the same hydra.sweeper.storage and study_name) into a new sweep folder; leave hydra.sweep.dir out",
        )


def check_outputs(cfg: DictConfig, sweep: bool) -> None:
    key = "hydra.sweep.dir" if sweep else "hydra.run.dir"
    path = check_output_folder(key, OmegaConf.select(cfg, key))
    check_name("hydra.job.name", OmegaConf.select(cfg, "hydra.job.name"))
    check_hydra_files(cfg)
    if sweep:  # its jobs are claimed one by one (expframe.sweep.claims): no lock on the folder
        check_sweep_subdir(cfg)
        check_sweep_folder(key, path, "Optuna" in str(OmegaConf.select(cfg, "hydra.sweeper._target_")))
        return
    if not cfg.get("resume"):
        check_new_run_folder(key, path)
    folder_lock.acquire(path, key)
