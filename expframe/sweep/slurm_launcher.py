"""Hydra's submitit SLURM launcher, waiting on squeue instead of sacct (`hydra/launcher=submitit_slurm`).

submitit learns a job's state from `sacct`. A cluster without accounting storage (a lab's small
cluster, the local one of tests.support.local_cluster) makes every poll print three "Bypassing sacct
error" warnings, and a job that ends without a result (scancel, a time limit, a node failure)
is never seen to end: the sweep waits forever. Here a job is done when its result file exists
or squeue (which keeps finished jobs for MinJobAge) says it ended; one that ended without a
result gets a metrics.json saying how, and the sweep goes on, as it does for a job that failed.
"""

import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
from omegaconf import OmegaConf, open_dict

from expframe.errors import ConfigError
from expframe.record.files import METRICS_FILE
from expframe.record.run_record import failure_record
from expframe.sweep import resume
from expframe.sweep.job_values import group_choices, objective, record_failure, swept_values
from expframe.sweep.slurm_queue import RUNNING, queue_states

log = logging.getLogger(__name__)

RESULT_GRACE_S = 30.0  # a shared file system may show the result file after squeue shows COMPLETED
INIT_KEYS = ("max_num_timeout", "python")  # the executor's own, given when it is made
FILE_POLL_S = 0.2
SQUEUE_POLL_S = (1.0, 5.0)  # first and longest pause between two squeue calls


class SqueueSlurmLauncher(SlurmLauncher):
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import submitit

        init = {f"slurm_{k}": self.params[k] for k in INIT_KEYS if k in self.params}
        executor = submitit.AutoExecutor(cluster="slurm", folder=self.params["submitit_folder"], **init)
        executor.update_parameters(**self._executor_parameters())
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:  # as the plugin does
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
        log.info(f"Submitit 'slurm' sweep output dir : {sweep_dir}")
        indices = [initial_job_idx + i for i in range(len(job_overrides))]
        state = Singleton.get_state()
        args = []
        for idx, overrides in zip(indices, job_overrides, strict=True):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            args.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", state))
        try:
            jobs = executor.map_array(self, *zip(*args, strict=True))
        except (submitit.core.utils.FailedJobError, OSError) as e:  # no sbatch, or no cluster it can reach
            reason = " ".join(str(e).split())
            raise ConfigError("hydra/launcher", "submitit_slurm", f"sbatch refused the jobs ({reason[:200]})") from None
        plan = resume.ACTIVE
        if plan is not None and plan.sweep_dir.absolute() == sweep_dir.absolute():
            for job, overrides in zip(jobs, job_overrides, strict=True):
                plan.note_cluster_job(list(overrides), job.job_id)
        ended = wait_for(jobs)
        returns = []
        for job, overrides, idx in zip(jobs, job_overrides, indices, strict=True):
            how = ended[job.job_id]
            returns.append(job.results()[0] if how is None else self._ended_without_result(job, how, overrides, idx))
        return returns

    def _executor_parameters(self) -> dict:
        """The plugin's mapping: the shared keys as they are, the rest prefixed `slurm_` for submitit."""
        shared = set(OmegaConf.structured(BaseQueueConf).keys())
        skip = {"submitit_folder", *INIT_KEYS}
        return {k if k in shared else f"slurm_{k}": v for k, v in self.params.items() if k not in skip}

    def _ended_without_result(self, job, slurm_state: str, overrides: Sequence[str], idx: int) -> JobReturn:
        """The job's folder gets the failure record a crashed job writes itself (unless the job wrote
        its own before it was stopped); its objective is NaN, so a sweeper records it and goes on."""
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(cfg.hydra.job):
            cfg.hydra.job.num = idx
            cfg.hydra.job.id = job.job_id
        out_dir = Path(cfg.hydra.sweep.dir) / str(cfg.hydra.sweep.subdir)
        status = "interrupted" if slurm_state == "CANCELLED" else "failed"
        reason = SlurmJobEnded(f"SLURM job {job.job_id} ended {slurm_state} without a result")
        written = _own_record(out_dir / METRICS_FILE)
        if written is None:
            swept = swept_values(cfg, list(overrides))
            written = record_failure(
                out_dir, failure_record(reason, cfg.seed, cfg.precision.name, swept, group_choices(cfg.hydra), status)
            )
        log.error("job #%d (%s): %s; the sweep goes on", idx, " ".join(filter_overrides(overrides)), reason)
        task_cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
        value = objective(written, cfg.objective)
        return JobReturn(list(overrides), task_cfg, cfg, str(out_dir), cfg.hydra.job.name, JobStatus.COMPLETED, value)


def _own_record(path: Path) -> dict | None:
    """What a job stopped by SIGTERM or Ctrl-C wrote about itself, if it did."""
    try:
        written = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return written if isinstance(written, dict) and written.get("status") in ("interrupted", "failed") else None


class SlurmJobEnded(RuntimeError):
    """A cluster job that ended (scancel, time limit, node failure) before it wrote its result."""


def wait_for(jobs: list) -> dict[str, str | None]:
    """Job id -> None (a result file exists) or the SLURM state it ended in without one. The result
    files are looked at every FILE_POLL_S; squeue, for the jobs that end without one, less often."""
    ended: dict[str, str | None] = {}
    seen_ended: dict[str, float] = {}
    states: dict[str, str] | None = None
    asked, pause = float("-inf"), SQUEUE_POLL_S[0]
    while True:
        waiting = [j for j in jobs if j.job_id not in ended]
        if waiting and time.monotonic() - asked >= pause:
            states = queue_states([j.job_id for j in waiting])
            asked, pause = time.monotonic(), min(SQUEUE_POLL_S[1], pause * 1.5)
        for job in waiting:
            state = None if states is None else states.get(job.job_id, "(no longer known to squeue)")
            if job.paths.result_pickle.exists():
                ended[job.job_id] = None
            elif state is not None and state.split()[0] not in RUNNING:
                since = seen_ended.setdefault(job.job_id, time.monotonic())
                if state != "COMPLETED" or time.monotonic() - since > RESULT_GRACE_S:
                    ended[job.job_id] = state
        if len(ended) == len(jobs):
            return ended
        time.sleep(FILE_POLL_S)
