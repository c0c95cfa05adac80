"""A sweeper that composes each job's config once; registered by expframe.cli.entry, light to import."""

from omegaconf import DictConfig

from expframe.sweep.private_apis import BasicSweeper


class ComposeOnceSweeper(BasicSweeper):
    """Hydra's basic sweeper (`hydra/sweeper: expframe_basic`, the default here), composing each
    job's config once instead of twice.

    The basic sweeper composes every job of a batch before launching it, so a composition error
    stops the sweep before its first job; the launcher then composes each job again (~0.1 s a job
    on this project's config). Here the launcher receives the configs that check composed, in the
    same order, so the early check stays and the second composition goes. A launcher that composes
    elsewhere (another process, a cluster) finds nothing kept and composes as before.
    """

    def validate_batch_is_legal(self, batch) -> None:
        loader = self.hydra_context.config_loader
        compose = getattr(loader, "_expframe_compose", loader.load_sweep_config)
        kept = {tuple(o): compose(master_config=self.config, sweep_overrides=list(o)) for o in batch}

        def reuse(master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
            found = kept.pop(tuple(sweep_overrides), None) if master_config is self.config else None
            return found if found is not None else compose(master_config=master_config, sweep_overrides=sweep_overrides)

        loader._expframe_compose = compose
        loader.load_sweep_config = reuse
