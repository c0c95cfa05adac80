"""What SLURM says of its jobs, through squeue (which keeps finished jobs for MinJobAge): the SLURM
launcher waits on it, and a sweep's claims ask it whether a cluster job still holds a point."""

import logging
import subprocess

log = logging.getLogger(__name__)

# the states of a job that has not ended (it may still write into its folder)
RUNNING = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING", "STOPPED"}
RUNNING |= {"PREEMPTED", "REQUEUE_FED", "REQUEUE_HOLD", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD"}

_squeue_failed = False


def queue_states(job_ids: list[str]) -> dict[str, str] | None:
    """squeue's state of each job, finished ones included (for MinJobAge); None when squeue fails,
    which is said once per process and then retried quietly."""
    global _squeue_failed
    bases = sorted({j.split("_")[0] for j in job_ids})
    cmd = ["squeue", "--states=all", "--array", "--noheader", "--format=%i %T", f"--jobs={','.join(bases)}"]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        if not _squeue_failed:
            log.warning("squeue failed (%s); waiting on the jobs' result files", out.stderr.strip() or out.returncode)
        _squeue_failed = True
        return None
    return dict(line.split(maxsplit=1) for line in out.stdout.splitlines() if " " in line)
