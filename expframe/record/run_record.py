"""metrics.json's one schema, for every run, finished or failed: the figures, what the run was (seed,
precision, swept values, choices, environment) and its task; what is unknown is null."""

from expframe.record import catalogue as figures

# what a classifier's metrics.json says about its task beyond the figures
TASK_KEYS = ("class_names", "positive", "class_weights", "val_confusion", "test_confusion")


def run_record(status: str, summary: dict, error: str | None = None, **about: object) -> dict:
    """metrics.json: one schema for every run, finished or failed (what is unknown is null)."""
    keys = (*figures.FLAGS, "peak_rss_scope", "init_hash", "seed", "device", "precision")
    keys += ("torch_threads", "threads_from", "other_cores_at_start", "energy_method", "energy_attribution")
    keys += ("energy_sources", "shift_inputs_sha256")
    return {
        "status": status,
        "error": error,
        **summary,
        **{k: about.get(k) for k in (*keys, "model_file", "env")},
        "swept": about.get("swept") or {},
        "choices": about.get("choices") or {},
        **(about.get("task") or dict.fromkeys(TASK_KEYS)),
    }


def failure_record(
    error: BaseException, seed: int, precision: str, swept: dict, choices: dict, status: str = "failed"
) -> dict:
    """metrics.json of a run that did not finish: what it was (seed, precision name, swept values,
    choices) and why."""
    return run_record(
        status,
        figures.empty_summary(),
        error=f"{type(error).__name__}: {error}",
        seed=seed,
        precision=precision,
        swept=swept,
        choices=choices,
    )
