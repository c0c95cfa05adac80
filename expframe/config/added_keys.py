"""Keys added on the command line (`+key=v`, `++key=v`) must be keys the project has.

Hydra refuses a typo'd key without `+`, but `+optimzer=adam` or `++epoch=3` is simply added: the run
trains with the default and exits 0. Here an added key must exist in the installed conf/ for the
options the run chose; a key of a `_target_` node (a constructor's argument) is left to the dry build,
which checks it against the target's signature. Free labels for runs live under `notes`, which
nothing in training reads.
"""

import difflib
import functools
from pathlib import Path

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser

from expframe import PROJECT_ROOT
from expframe.errors import ConfigError

LABELS = "notes"


@functools.cache
def _file(path: Path) -> dict:
    content = yaml.safe_load(path.read_text()) if path.is_file() else None
    return content if isinstance(content, dict) else {}


def _declared(conf_dir: Path, group: str, option: str) -> tuple[dict, bool]:
    """The option file's keys, and whether it writes at the top level (`# @package _global_`)."""
    path = conf_dir / group / f"{option}.yaml"
    first = path.read_text().split("\n", 1)[0] if path.is_file() else ""
    return _file(path), "@package _global_" in first


def _trees(conf_dir: Path, choices: dict[str, list[str]]) -> list[dict]:
    """The installed keys as plain nested dicts: train.yaml's (each group an empty node), then one
    tree per chosen option file (every value of a swept group), presets marked as top-level."""
    base = {k: v for k, v in _file(conf_dir / "train.yaml").items() if k not in ("defaults", "hydra")}
    for group, options in choices.items():
        if options and (conf_dir / group).is_dir():
            base.setdefault(group, {})
    trees = []
    for group, options in choices.items():
        for option in options or []:
            content, is_global = _declared(conf_dir, group, option)
            trees.append({"group": group, "option": option, "content": content, "global": is_global})
    return [base, *trees]


def _lookup(tree: dict, parts: list[str]) -> str:
    """'known', 'target' (inside a `_target_` node: the dry build checks it) or 'unknown'."""
    node: object = tree
    for part in parts:
        if isinstance(node, dict) and "_target_" in node:
            return "target"
        if not isinstance(node, dict) or part not in node:
            return "unknown"
        node = node[part]
    return "known"


def _known(conf_dir: Path, choices: dict[str, list[str]], parts: list[str]) -> tuple[str, list[str]]:
    """The key's standing and the names known beside it (for the nearest-name hint)."""
    base, *trees = _trees(conf_dir, choices)
    head = parts[0]
    siblings = set(base)
    standing = _lookup(base, parts) if head in base and not (conf_dir / head).is_dir() else "unknown"
    group_options = [t for t in trees if t["group"] == head and not t["global"]]
    if group_options:
        found = [_lookup(t["content"], parts[1:]) for t in group_options]
        standing = "unknown" if "unknown" in found else ("target" if "target" in found else "known")
        siblings = {k for t in group_options for k in _children(t["content"], parts[1:-1])}
    elif len(parts) > 1 and head in base:
        siblings = set(_children(base, parts[:-1]))
    for preset in (t for t in trees if t["global"]):
        if _lookup(preset["content"], parts) != "unknown":
            standing = "known" if standing == "unknown" else standing
        siblings |= set(_children(preset["content"], parts[:-1]))
    return standing, sorted(str(s) for s in siblings if str(s) != "defaults")


def _children(tree: dict, parts: list[str]) -> list[str]:
    node: object = tree
    for part in parts:
        node = node.get(part) if isinstance(node, dict) else None
    return list(node) if isinstance(node, dict) else []


def check_added_keys(
    task_overrides: list[str], choices: dict[str, str | None], conf_dir: Path = PROJECT_ROOT / "conf"
) -> None:
    """`choices`: each group's option; a group the command line sweeps is checked for each of its values."""
    parsed = OverridesParser.create().parse_overrides(task_overrides)
    options = {g: [o] for g, o in choices.items() if o is not None and not g.startswith("hydra/")}
    for override in parsed:
        key = override.get_key_element()
        if override.is_sweep_override() and (conf_dir / key.lstrip("+~")).is_dir():
            options[key.lstrip("+~")] = [str(v) for v in override.sweep_iterator()]
    for override in parsed:
        if not (override.is_add() or override.is_force_add()):
            continue
        key = override.key_or_group
        if key.startswith("hydra") or (conf_dir / key).is_dir() or key.split(".")[0] == LABELS:
            continue
        parts = key.split(".")
        standing, siblings = _known(conf_dir, options, parts)
        if standing != "unknown":
            continue
        near = difflib.get_close_matches(parts[-1], siblings, n=1, cutoff=0.6)
        where = ".".join(parts[:-1])
        hint = f"did you mean {'.'.join([*parts[:-1], near[0]])}? " if near else ""
        if near and len(parts) == 1 and (conf_dir / near[0]).is_dir():
            hint = f"did you mean the config group {near[0]} ({near[0]}={override.value()})? "
        raise ConfigError(
            key,
            override.value(),
            f"is not a key {'of ' + where if where else 'expframe has'}: {hint}"
            f"(free labels for runs go under {LABELS}: +{LABELS}.{parts[-1]}=...)",
        )
