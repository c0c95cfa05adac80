"""Build every configured object once, small and on the CPU, before anything is created.

A key the target does not take (`+model.foo=1`), a value its constructor refuses
(`optimizer.momentum=-1`), a schedule that turns the learning rate negative or a model that cannot
take the data set's inputs becomes one ConfigError naming the key, instead of a traceback from
inside the first job. The checks read the same config nodes the run builds from, so a new option
of any group is covered without a line here.
"""

import fnmatch
import inspect
import json
import math
import os
import warnings
from collections.abc import Callable

import torch
from hydra.utils import get_object
from omegaconf import Container, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from expframe import EXECUTION_WHITELIST
from expframe.build import build
from expframe.errors import ConfigError, as_typed, short_reason
from expframe.models.contract import ModelInputs, build_model, check_output
from expframe.train.losses import build_loss

# what the code passes to a target besides its YAML keys
PASSED_BY_CODE = {
    "model": {"input_shape", "num_classes", "activation"},
    "optimizer": {"params"},
    "scheduler": {"optimizer"},
    "init.weight": {"tensor"},
    "init.bias": {"tensor"},
}
# parameters up to which the dry build checks a model's output on the CPU rather than the meta device
CPU_CHECK_PARAMS = 2_000_000
# keys of a `_target_` node that expframe reads itself and does not pass on
READ_BY_CODE = {"loss": {"class_weights"}}
TARGETS = ("model", "activation", "optimizer", "scheduler", "loss", "init.weight", "init.bias", "dataset.source")


def check_keys(path: str, node: DictConfig) -> None:
    """Every key of a `_target_` node must be a parameter of the target (unless it takes **kwargs)."""
    target = node.get("_target_")
    if target is None:
        return
    if not isinstance(target, str) or not any(fnmatch.fnmatch(target, p) for p in EXECUTION_WHITELIST):
        raise ConfigError(
            f"{path}._target_", target, "is not a target expframe may call (torch.nn.*, torch.optim.*, conf/'s own)"
        )
    try:
        params = inspect.signature(get_object(target)).parameters
    except (ImportError, AttributeError, ValueError, TypeError) as e:
        raise ConfigError(f"{path}._target_", target, f"cannot be found ({short_reason(e)})") from None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    taken = [name for name in params if name not in PASSED_BY_CODE.get(path, set()) and name != "self"]
    for key in node:
        if str(key).startswith("_") or key in READ_BY_CODE.get(path, set()):
            continue
        value = OmegaConf.select(node, str(key))
        if key not in params:
            raise ConfigError(f"{path}.{key}", value, f"not a parameter of {target} (it takes {', '.join(taken)})")
        default = params[key].default
        if isinstance(default, bool | int | float | str) and value is not None and not _same_kind(value, default):
            kind = (
                "true or false" if isinstance(default, bool) else "a string" if isinstance(default, str) else "a number"
            )
            raise ConfigError(f"{path}.{key}", value, f"must be {kind} (like its default, {as_typed(default)})")


def _same_kind(value: object, default: object) -> bool:
    """Numbers are numbers (torch gives `dampening=0` an int default and takes floats)."""
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, int | float):
        return isinstance(value, int | float)
    return isinstance(value, str)


def _refused(path: str, node: DictConfig, error: BaseException) -> ConfigError:
    """Names the key the message mentions (`Invalid momentum value: -1` -> optimizer.momentum)."""
    why = short_reason(error)
    for key in node:
        if not str(key).startswith("_") and str(key).lower().rstrip("s") in why.lower():
            return ConfigError(f"{path}.{key}", node[key], f"refused by {node.get('_target_')} ({why})")
    return ConfigError(path, node.get("_target_"), f"could not be built ({why})")


def check_schedule(cfg: DictConfig, optimizer: torch.optim.Optimizer) -> None:
    """Steps the schedule through every epoch: each epoch's learning rate must be finite and >= 0."""
    scheduler = build(cfg.scheduler)(optimizer)
    for epoch in range(1, cfg.epochs + 1):
        lr = optimizer.param_groups[0]["lr"]
        if not (math.isfinite(lr) and lr >= 0):
            raise ConfigError(
                "scheduler", OmegaConf.select(cfg, "scheduler._target_"), f"gives lr={lr:.3g} at epoch {epoch}"
            )
        scheduler.step()


def _built(path: str, cfg: DictConfig, make: Callable[[], object]) -> object:
    try:
        return make()
    except ConfigError:
        raise
    except Exception as e:
        raise _refused(path, OmegaConf.select(cfg, path), e) from None


# what a dry build reads; two configurations that agree on these (resolved) build the same objects
READS = ("model", "activation", "init", "dataset", "optimizer", "loss", "scheduler", "epochs")
# the resolved READS of the dry builds that passed in this process: a sweep over seeds (or any key
# nothing built depends on) builds once, not once per value
_PASSED: set[str] = set()


def dry_build(cfg: DictConfig) -> None:
    """On PyTorch's meta device: shapes and constructor checks without allocating or computing (a
    billion-parameter model costs nothing here). Warnings of the throw-away objects stay silent."""
    inputs = build_inputs(cfg)
    reads = None if inputs is None else json.dumps(inputs, sort_keys=True, default=repr)
    if reads is not None and reads in _PASSED:
        return
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        _dry_build(cfg)
    if reads is not None:
        _PASSED.add(reads)


def build_inputs(cfg: DictConfig) -> dict | None:
    """The READS, resolved, as plain values; None when one does not resolve: the build itself then
    says which and why."""
    try:
        values = {k: OmegaConf.select(cfg, k) for k in READS}
        return {
            k: OmegaConf.to_container(v, resolve=True) if isinstance(v, Container) else v for k, v in values.items()
        }
    except OmegaConfBaseException:
        return None


def check_output_cheaply(model: torch.nn.Module, cfg: DictConfig, inputs: ModelInputs) -> None:
    """A forward pass on the meta device runs PyTorch's Python decompositions, whose first use in a
    process imports torch._dynamo and sympy (~1 s). A model small enough to build in milliseconds is
    built again on the CPU and checked there; only a big one is checked on the meta device."""
    if sum(p.numel() for p in model.parameters()) > CPU_CHECK_PARAMS:
        check_output(model, cfg.model._target_, inputs)
        return
    with torch.device("cpu"):
        build_model(cfg.model, cfg.activation, cfg.init, inputs)


def machine_memory_bytes() -> int:
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_fits(model: torch.nn.Module, target: str) -> None:
    """The weights alone (measured on the meta device, nothing allocated) must fit in the machine's
    memory; training needs more (gradients, optimizer state, activations), so this is a floor."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    memory = machine_memory_bytes()
    if weights > memory:
        count = sum(p.numel() for p in model.parameters())
        raise ConfigError(
            "model",
            target,
            f"has {count:,} parameters: {weights / 2**30:,.1f} GiB for the weights alone, "
            f"over this machine's {memory / 2**30:,.1f} GiB of memory (a smaller model.width or model.depth)",
        )


def _dry_build(cfg: DictConfig) -> None:
    for path in TARGETS:
        node = OmegaConf.select(cfg, path)
        if isinstance(node, DictConfig):
            check_keys(path, node)
    for path in ("init.weight", "init.bias"):
        node = OmegaConf.select(cfg, path)
        if isinstance(node, DictConfig):
            _built(path, cfg, lambda node=node: build(node)(torch.empty(4, 4)))
    inputs = ModelInputs(tuple(cfg.dataset.input_shape), cfg.dataset.num_classes)
    try:
        model = build_model(cfg.model, cfg.activation, cfg.init, inputs, check=False)
        check_output_cheaply(model, cfg, inputs)
    except ConfigError:
        raise
    except Exception as e:
        target = cfg.model.get("_target_")
        raise ConfigError(
            "model", target, f"cannot be built for inputs shaped {inputs.input_shape} ({short_reason(e)})"
        ) from None
    check_fits(model, cfg.model.get("_target_"))
    optimizer = _built("optimizer", cfg, lambda: build(cfg.optimizer)(model.parameters()))
    _built("loss", cfg, lambda: build_loss(cfg.loss, cfg.dataset.num_classes, torch.device("meta")))
    if cfg.scheduler.get("_target_"):
        _built("scheduler", cfg, lambda: check_schedule(cfg, optimizer))
