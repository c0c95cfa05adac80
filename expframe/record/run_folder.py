"""Reading a run folder that someone else wrote: its files are data, never code.

Students share run folders and hand them in. A folder's `.hydra/config.yaml` names `_target_`s, and
building from them as written would let a crafted folder call any function the allow-list admits
(a process starter, a file writer). Here the saved config gives the values only: each `_target_` it
names must be the one the installed `conf/` declares at that place for the option the run chose
(its `.hydra/hydra.yaml` says which; without it, any option of that group). Anything else is one
ConfigError naming the key and the target, raised before anything is built.
"""

import functools
import json
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from expframe import PROJECT_ROOT
from expframe.errors import ConfigError, short_reason
from expframe.record.files import CONFIG_FILE, HYDRA_FILE, METRICS_FILE, RETRAIN_FILE


def targets_in(node: object, prefix: str = "") -> dict[str, str]:
    """{dotted path of a node: its `_target_`} for every node below `node` (lists included)."""
    found: dict[str, str] = {}
    if isinstance(node, dict):
        if "_target_" in node:
            found[prefix.rstrip(".")] = node["_target_"]
        for key, value in node.items():
            if key != "hydra" or prefix:
                found.update(targets_in(value, f"{prefix}{key}."))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found.update(targets_in(value, f"{prefix}{i}."))
    return found


@functools.cache
def declared_targets(conf_dir: Path = PROJECT_ROOT / "conf") -> dict[tuple[str, str], dict[str, str]]:
    """{(group, option): {dotted path in the job's config: _target_}} of every file of the installed
    conf/; files with `# @package _global_` (presets, searches) declare at the top level."""
    declared = {}
    for path in sorted(conf_dir.glob("*/*.yaml")):
        group, text = path.parent.name, path.read_text()
        if group == "hydra":
            continue
        global_package = "@package _global_" in text.split("\n", 1)[0]
        content = yaml.safe_load(text) or {}
        declared[(group, path.stem)] = targets_in(content if global_package else {group: content})
    return declared


def check_targets(saved: dict, choices: dict[str, str | None]) -> None:
    """Every `_target_` in `saved` must be one the installed conf/ declares at its path, for the
    option chosen in its group (any option when the choice is unknown) or by a chosen preset."""
    declared = declared_targets()
    for path, target in targets_in(saved).items():
        group = path.split(".")[0]
        allowed = {
            paths[path]
            for (declaring, option), paths in declared.items()
            if path in paths and (not choices or choices.get(declaring) == option)
        }
        if target not in allowed:
            chosen = f"{group}={choices[group]}" if choices.get(group) else f"any {group} option"
            raise ConfigError(
                f"{path}._target_",
                target,
                f"is not what the installed conf/ declares there for {chosen} "
                f"({', '.join(sorted(allowed)) or 'no target'}): a run folder's config never names code to run",
            )


def _read_yaml(run_dir: Path, name: Path) -> dict:
    try:
        loaded = OmegaConf.load(run_dir / name)
        return OmegaConf.to_container(loaded, resolve=True) if isinstance(loaded, DictConfig) else None
    except (OSError, UnicodeDecodeError, yaml.YAMLError, OmegaConfBaseException, ValueError) as e:
        raise ConfigError("RUN_DIR", str(run_dir), f"has an unreadable {name} ({short_reason(e, 120)})") from None


def saved_choices(run_dir: Path) -> dict[str, str | None]:
    """The option of each config group the run chose, from Hydra's `.hydra/hydra.yaml` (read as plain
    YAML: its interpolations need a Hydra app); {} when the folder has none."""
    path = run_dir / HYDRA_FILE
    if not path.is_file():
        return {}
    try:
        hydra = yaml.safe_load(path.read_text()) or {}
        choices = hydra["hydra"]["runtime"]["choices"]
    except (OSError, UnicodeDecodeError, yaml.YAMLError, KeyError, TypeError) as e:
        raise ConfigError("RUN_DIR", str(run_dir), f"has an unreadable {HYDRA_FILE} ({short_reason(e, 120)})") from None
    return {
        str(k): None if v is None else str(v) for k, v in (choices or {}).items() if not str(k).startswith("hydra/")
    }


def read_config(run_dir: Path) -> DictConfig:
    """The run's saved config, resolved, with every `_target_` checked against the installed conf/."""
    if not (run_dir / CONFIG_FILE).is_file():
        raise ConfigError("RUN_DIR", str(run_dir), f"has no {CONFIG_FILE} (not a run folder)")
    saved = _read_yaml(run_dir, CONFIG_FILE)
    if not isinstance(saved, dict):
        raise ConfigError("RUN_DIR", str(run_dir), f"{CONFIG_FILE} is not a mapping of keys")
    check_targets(saved, saved_choices(run_dir))
    return OmegaConf.create(saved)


def read_weights(run_dir: Path, name: str) -> dict:
    """weights_only: a weights file holds tensors, never code; anything else is one line."""
    import torch

    try:
        state = torch.load(run_dir / name, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises pickle, zip, runtime and OS errors for a damaged or crafted file
        raise ConfigError("RUN_DIR", str(run_dir), f"has an unreadable {name} ({short_reason(e, 120)})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError("RUN_DIR", str(run_dir), f"{name} is not a state_dict (names to tensors)")
    return state


def read_metrics(run_dir: Path) -> dict:
    path = run_dir / METRICS_FILE
    if not path.is_file():
        raise ConfigError("RUN_DIR", str(run_dir), f"has no {METRICS_FILE} (the run never finished)")
    try:
        metrics = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ConfigError(
            "RUN_DIR", str(run_dir), f"has an unreadable {METRICS_FILE} ({short_reason(e, 120)})"
        ) from None
    if not isinstance(metrics, dict):
        raise ConfigError("RUN_DIR", str(run_dir), f"{METRICS_FILE} is not a JSON object")
    return metrics


def read_retrain_test_indices(run_dir: Path, n_test: int) -> list[int]:
    """The original test samples a retraining scored its models on (retrain.json), checked: unique
    integers that index the test split, nothing else."""
    path = run_dir / RETRAIN_FILE
    try:
        record = json.loads(path.read_text())
        indices = record["original_test_indices"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(
            "RUN_DIR", str(run_dir), f"is a retraining without a readable {RETRAIN_FILE} ({short_reason(e, 120)})"
        ) from None
    if (
        not isinstance(indices, list)
        or not indices
        or not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < n_test for i in indices)
        or len(set(indices)) != len(indices)
    ):
        raise ConfigError(
            "RUN_DIR",
            str(run_dir),
            f"{RETRAIN_FILE}'s original_test_indices are not unique indices of the {n_test} test samples",
        )
    return indices
