"""The grid sweeper: Hydra's basic sweeper, resuming and growing its sweep folder and composing
each job's config once; registered by expframe.cli.entry, light to import."""

import logging
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from expframe.record.files import MULTIRUN_FILE
from expframe.sweep import resume
from expframe.sweep.private_apis import BasicSweeper

log = logging.getLogger("expframe")


class ComposeOnceSweeper(BasicSweeper):
    """Hydra's basic sweeper (`hydra/sweeper: expframe_basic`, the default here) that runs only
    what its sweep folder lacks (expframe.sweep.resume) and composes each job's config once.

    Every point of the grid is planned before the first job: a done point is not composed at all,
    the others are composed and compared with the folder's jobs, so a composition error still
    stops the sweep before it starts. The launcher then receives the configs the plan composed
    (upstream composes each job twice, ~0.1 s each); a launcher that composes elsewhere (another
    process, a cluster) finds nothing kept and composes from the same overrides.
    """

    def sweep(self, arguments: list[str]) -> Any:
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        overrides = parser.parse_overrides([*self._parse_config(), *arguments])
        grid = [point for batch in self.split_arguments(overrides, None) for point in batch]
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        digest = resume.conf_digest(resume.config_dirs(self.config.hydra.runtime.config_sources))
        rerun_changed = bool(OmegaConf.select(self.config, "sweep.rerun_changed", default=False))
        resume.ACTIVE = resume.Plan(sweep_dir, [], outside=0)  # refused: the end sums up no job
        plan = resume.plan(sweep_dir, grid, self._compose, digest, rerun_changed)
        resume.ACTIVE = plan
        log.info(plan.line())
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / MULTIRUN_FILE)
        to_run = plan.to_run()
        self._keep({tuple(p.launch(digest)): p.config for p in to_run})
        size = self.max_batch_size or max(1, len(to_run))
        returns = []
        for start in range(0, len(to_run), size):
            batch = to_run[start : start + size]
            results = self.launcher.launch([p.launch(digest) for p in batch], initial_job_idx=first_number(batch))
            for r in results:
                _ = r.return_value  # a job's exception, raised here as upstream does
            returns.append(results)
        return returns

    def _compose(self, overrides: list[str]) -> DictConfig:
        loader = self.hydra_context.config_loader
        compose = getattr(loader, "_expframe_compose", loader.load_sweep_config)
        return compose(master_config=self.config, sweep_overrides=overrides)

    def _keep(self, kept: dict[tuple, DictConfig]) -> None:
        """The launcher's `load_sweep_config` hands out the plan's configs, each once."""
        loader = self.hydra_context.config_loader
        compose = getattr(loader, "_expframe_compose", loader.load_sweep_config)

        def reuse(master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
            found = kept.pop(tuple(sweep_overrides), None) if master_config is self.config else None
            return found if found is not None else compose(master_config=master_config, sweep_overrides=sweep_overrides)

        loader._expframe_compose = compose
        loader.load_sweep_config = reuse


def first_number(batch: list[resume.Point]) -> int:
    """Hydra's job number of the batch's first job: its folder's, so a fresh sweep numbers as upstream."""
    return (resume.job_number(batch[0].folder) if batch else None) or 0
