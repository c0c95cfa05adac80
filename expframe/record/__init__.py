"""The run folder: every file name a run writes, declared once (files.py); the figure catalogue, one
declaration per figure read by history, metrics.json, TensorBoard, HParams, objectives and the
report (catalogue.py); metrics.json's schema (run_record.py); atomic writes (atomic.py, weights.py);
history.csv and TensorBoard (recorder.py); password masking (redact.py); reading a folder someone
sent, as data (run_folder.py); the lock of a folder being written (folder_lock.py).

Imports: the ground (errors) only: everything above reads and writes run folders through here.
"""
