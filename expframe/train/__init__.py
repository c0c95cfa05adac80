"""One training run: `run.train(cfg, out_dir)` (the entry, with `setup.py` the only place here that
reads the whole config), the epoch loop (loop.py), steps (eager and CUDA-graphed), losses,
augmentation, device/precision/threads/seeding (runtime.py), early stopping, checkpoint and resume.

Imports: measure, models, data, record and the ground. Never config, deploy, report, sweep or cli:
the job checks the values before and runs the steps after (serving) through `after`.
"""
