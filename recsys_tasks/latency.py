"""Latency of a call, as percentiles over repeated calls: what the evaluate stage and the benchmark record."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def latency_percentiles(call: Callable[[], object], calls: int, warmup: int = 5) -> dict[str, float]:
    """p50/p99/mean wall-clock milliseconds of ``call()``, after ``warmup`` unmeasured calls."""
    for _ in range(warmup):
        call()
    seconds = np.empty(calls)
    for i in range(calls):
        started = time.perf_counter()
        call()
        seconds[i] = time.perf_counter() - started
    milliseconds = seconds * 1000
    return {
        "p50_ms": float(np.percentile(milliseconds, 50)),
        "p99_ms": float(np.percentile(milliseconds, 99)),
        "mean_ms": float(milliseconds.mean()),
    }
