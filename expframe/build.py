"""instantiate() under expframe's execution whitelist, so library callers and tests need no context."""

from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig

from expframe import EXECUTION_WHITELIST


def build(node: DictConfig, **kwargs: Any) -> Any:
    return instantiate(node, _execution_whitelist_=EXECUTION_WHITELIST, **kwargs)
