"""Latency percentiles, throughput and a load test, timed like training: warm-up first, a fixed
number of timed calls, and the machine's load read around them (a figure measured while other
processes took the CPUs is flagged, as a training run's speed figures are)."""

import os
import threading
import time

import numpy as np

from expframe.deploy.variants import Predict
from expframe.measure.clocks import CpuWindow, machine_busy, share


def percentiles(ms: list[float]) -> dict[str, float]:
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {"p50_ms": float(p50), "p95_ms": float(p95), "p99_ms": float(p99)}


def flag(windows: list, threads: int) -> bool:
    return machine_busy(share(windows, threads)["other_cpu_load"], threads, os.cpu_count() or 1)


def latency(predict: Predict, x: np.ndarray, warmup: int, calls: int) -> dict[str, float]:
    """Batch-1 latency per call after `warmup` untimed calls."""
    one = x[:1]
    for _ in range(warmup):
        predict(one)
    ms = []
    for _ in range(calls):
        start = time.perf_counter()
        predict(one)
        ms.append((time.perf_counter() - start) * 1000)
    return percentiles(ms)


def throughput(predict: Predict, x: np.ndarray, batch: int, calls: int) -> float:
    """Samples per second at `batch` (the test set tiled when it is smaller)."""
    xb = np.resize(x, (batch, *x.shape[1:])).astype(x.dtype)
    predict(xb)
    start = time.perf_counter()
    for _ in range(calls):
        predict(xb)
    return batch * calls / (time.perf_counter() - start)


def load_test(session: object, x: np.ndarray, clients: int, seconds: float) -> dict[str, float]:
    """`clients` threads sending batch-1 requests to one ONNX Runtime session (it releases the GIL
    while it runs) for `seconds`: requests per second and the latency percentiles under that load."""
    one = x[:1]
    session.run(None, {"x": one})
    latencies: list[list[float]] = [[] for _ in range(clients)]
    stop = time.perf_counter() + seconds

    def client(mine: list[float]) -> None:
        while (start := time.perf_counter()) < stop:
            session.run(None, {"x": one})
            mine.append((time.perf_counter() - start) * 1000)

    threads = [threading.Thread(target=client, args=(mine,)) for mine in latencies]
    begin = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - begin
    every = [ms for mine in latencies for ms in mine]
    return {"clients": clients, "requests_per_s": len(every) / wall, **percentiles(every)}


def timed(measure, threads: int) -> tuple[object, bool]:
    """`measure()` inside a CPU window: its result and whether other processes contended it."""
    window = CpuWindow()
    window.start()
    result = measure()
    return result, flag([window.stop()], threads)
