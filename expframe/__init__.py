"""expframe: Hydra-configured PyTorch ablation studies with honest speed, memory and accuracy."""

import hashlib
from pathlib import Path

# the folder holding conf/ and train.py (the project, in the editable install the README uses)
PROJECT_ROOT = Path(__file__).resolve().parents[1]

# Config-selected targets that instantiate() may call: torch layers, optimizers, schedulers,
# init functions, Optuna's pruners, and expframe's own builders. Anything else in a config is refused by Hydra.
EXECUTION_WHITELIST = ["torch.nn.*", "torch.optim.*", "optuna.pruners.*", "expframe.*"]


# bytes of a job folder's override part: file systems refuse names over 255 bytes, and an Optuna
# trial with many parameters (or long float values) passes that
FOLDER_NAME_BYTES = 200


def capped_folder_name(name: str, limit: int = FOLDER_NAME_BYTES) -> str:
    """`name` when it fits; else its start and a hash of the whole, so names stay unique."""
    data = name.encode()
    if len(data) <= limit:
        return name
    digest = hashlib.sha1(data).hexdigest()[:10]
    return data[: limit - len(digest) - 1].decode(errors="ignore") + "-" + digest


def _register_resolvers() -> None:
    """`${expframe_first_set:a,b}`: a unless it is null (the run folder of a resumed run);
    `${expframe_capped:name}`: a job folder name the file system accepts."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("expframe_first_set"):
        OmegaConf.register_resolver("expframe_first_set", lambda first, second: second if first is None else first)
    if not OmegaConf.has_resolver("expframe_capped"):
        OmegaConf.register_resolver("expframe_capped", capped_folder_name)


_register_resolvers()
