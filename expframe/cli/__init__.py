"""The commands' thin entry points: train.py's error handling and exit (entry.py), `expframe-report`
(report.py), `expframe-eval` (rescore.py), `expframe-deploy` (deploy.py), and what eval and deploy
share: a finished run folder made usable again (finished_run.py). Only here does a function end the
process (SystemExit with one line) or name a command-line flag.

Imports: anything below (sweep, config, report, deploy, train, measure, models, data, record).
"""
