"""Serving cost of a trained model: variants (fp32, int8 dynamic, pruned, ONNX Runtime fp32/int8),
their size, accuracy, latency percentiles, throughput and load test (serve.py, variants.py,
latency.py). A job runs `serve.deploy` after training; `expframe-deploy` (cli/) on finished runs.

Imports: measure (clocks and contention), record (file names, atomic writes) and the ground.
"""
