"""expframe: Hydra-configured PyTorch ablation studies with honest speed, memory and accuracy."""

# Config-selected targets that instantiate() may call: torch layers, optimizers, schedulers,
# init functions, and expframe's own builders. Anything else in a config is refused by Hydra.
EXECUTION_WHITELIST = ["torch.nn.*", "torch.optim.*", "expframe.*"]
