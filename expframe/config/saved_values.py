"""A run folder's saved values pass the checks a typed command line passes, before eval, deploy or
anything else builds from them."""

from pathlib import Path

from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from expframe.config.validate import check_values
from expframe.errors import ConfigError, short_reason
from expframe.train.runtime import check_precision, resolve_device


def check_saved_values(run_dir: Path, cfg: DictConfig) -> None:
    """A folder's values pass the checks a typed command line passes (a huge width, a string where a
    number goes, a missing group), before anything is built: one line naming the folder and the key."""
    try:
        check_values(cfg)
        check_precision(cfg.precision, resolve_device(cfg.device))
    except ConfigError as e:
        raise ConfigError("RUN_DIR", str(run_dir), f"its config has {e}") from None
    except (OmegaConfBaseException, AttributeError, KeyError, TypeError, ValueError) as e:
        raise ConfigError("RUN_DIR", str(run_dir), f"its config is incomplete ({short_reason(e, 160)})") from None
