"""Reading run folders into one table: finding runs and their configs, grouping repeats, the tables
(md/csv/tex), the ablation statistics (statistics.py), energy footnotes (green.py), the serving
table (deploy_table.py) and the figures. It imports no torch (a test and `lint-imports` hold it),
so `expframe-report` and a sweep's report start fast.

Imports: record (file names, the figure catalogue, atomic writes) and the ground. Never train,
deploy, measure, models or data.
"""
