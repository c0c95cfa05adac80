"""The checks before anything runs: value rules (validate.py), the dry build of the model and loss on
the meta device (dry_build.py), `+key` additions (added_keys.py), output folders (output_folders.py),
a run folder's saved values (saved_values.py). They must see every family they check (models,
data, losses, precision, energy, deploy settings, the figure catalogue), so they sit above those.

Imports: deploy, train, measure, models, data, record, and the ground (errors, build). Never report,
sweep or cli.
"""
