"""Sweep-level checks and summaries that no single job can do."""

import copy
import json
import logging
from collections import Counter
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from expframe.errors import ConfigError
from expframe.validate import check_values

log = logging.getLogger("expframe")


def check_sweep_values(cfg: DictConfig) -> None:
    """Every value of a command-line sweep (`key=a,b`), checked before the first job starts."""
    sources = [Path(src.path) for src in cfg.hydra.runtime.config_sources if src.schema == "file"]
    # what a job receives: Hydra's own node is most of the config and no check reads it
    job_part = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    for override in OverridesParser.create().parse_overrides(list(cfg.hydra.overrides.task)):
        if not (override.is_choice_sweep() or override.is_range_sweep()):
            continue
        key = override.get_key_element().lstrip("+~")
        values = list(override.sweep_string_iterator())
        if any((src / key).is_dir() for src in sources):
            options = sorted({p.stem for src in sources for p in (src / key).glob("*.yaml")})
            for value in values:
                if value not in options:
                    raise ConfigError(key, value, f"must be one of {', '.join(options)}")
            continue
        for value in override.sweep_iterator():
            trial = copy.deepcopy(job_part)
            with read_write(trial), open_dict(trial):
                OmegaConf.update(trial, key, value, force_add=True)
            check_values(trial)


def status_counts(sweep_dir: Path) -> Counter:
    counts: Counter = Counter()
    for job in sorted(p for p in sweep_dir.iterdir() if (p / ".hydra").is_dir()):
        try:
            counts[json.loads((job / "metrics.json").read_text())["status"]] += 1
        except (OSError, ValueError, KeyError):
            counts["incomplete"] += 1
    return counts


def log_status_counts(sweep_dir: Path) -> None:
    if not sweep_dir.is_dir():
        return
    for status, n in sorted(status_counts(sweep_dir).items()):
        log.info("%s: %d job%s", status, n, "" if n == 1 else "s")
