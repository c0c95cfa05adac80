"""expframe's entry point: `python train.py [group=option ...] [key=value ...]`, `-m` for sweeps."""

import hydra
from omegaconf import DictConfig

from expframe import EXECUTION_WHITELIST
from expframe.cli.entry import exit_without_teardown, run_cli


@hydra.main(config_path="conf", config_name="train", execution_whitelist=EXECUTION_WHITELIST)
def main(cfg: DictConfig) -> float | list[float]:
    """torch and the job's modules are imported here, once Hydra has parsed the command line, so
    `--help` is quick and what `run_cli` starts (CodeCarbon's hardware detection) overlaps them."""
    from expframe.sweep.job import run

    return run(cfg)


if __name__ == "__main__":
    run_cli(main)
    exit_without_teardown()
