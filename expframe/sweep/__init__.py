"""Running jobs: the Hydra task (job.py: one job, its failure recorded, `train_job` its work without
Hydra), Hydra callbacks (checks before a run or sweep, the summary after), the sweep-level checks,
the Optuna sweeper, the SLURM launcher, the compose-once sweeper, cross-validation, the end-of-sweep
report worker, and every private Hydra/Python API the project relies on (private_apis.py).

Imports: config, report, deploy, train and everything below. Never cli.
"""
