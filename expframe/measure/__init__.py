"""What a run measures, without knowing of runs: step clocks and CPU contention (clocks.py), peak
memory, environment and activation size (memory.py), energy (CodeCarbon, energy.py), test-set
scoring (scoring.py), and SIGTERM as an interrupt that the energy meter defers (signals.py).

Imports: the ground (errors) only; a run's files are named by the caller (record/files.py).
"""
