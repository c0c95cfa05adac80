"""expframe: Hydra-configured PyTorch ablation studies with honest speed, memory and accuracy."""

from pathlib import Path

# the folder holding conf/ and train.py (the project, in the editable install the README uses)
PROJECT_ROOT = Path(__file__).resolve().parents[1]

# Config-selected targets that instantiate() may call: torch layers, optimizers, schedulers,
# init functions, and expframe's own builders. Anything else in a config is refused by Hydra.
EXECUTION_WHITELIST = ["torch.nn.*", "torch.optim.*", "expframe.*"]


def _register_resolvers() -> None:
    """`${expframe_first_set:a,b}`: a unless it is null (the run folder of a resumed run)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("expframe_first_set"):
        OmegaConf.register_resolver("expframe_first_set", lambda first, second: second if first is None else first)


_register_resolvers()
