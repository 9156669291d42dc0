"""Timing, compile time, the hardware of a run, and log-log slope fits."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np


def block(tree: Any) -> Any:
    """``block_until_ready`` on every array of a pytree; returns it."""
    return jax.tree_util.tree_map(lambda a: a.block_until_ready(), tree)


def compile_timed(fn: Callable, *args) -> tuple[Callable, float]:
    """Jits, lowers and compiles ``fn`` for ``args``; returns ``(compiled, seconds)``."""
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    return compiled, time.perf_counter() - t0


def median_seconds(fn: Callable, *args, warmup: int = 1, repeats: int = 3) -> float:
    """Median wall time of ``repeats`` calls of ``fn(*args)`` after ``warmup`` untimed calls.

    Every call ends in ``block_until_ready``, so asynchronous dispatch is included.
    """
    for _ in range(max(int(warmup), 0)):
        block(fn(*args))
    times = []
    for _ in range(max(int(repeats), 1)):
        t0 = time.perf_counter()
        block(fn(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def hardware() -> dict:
    """Platform, CPU model, core count, jax version and device of this run."""
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    dev = jax.devices()[0]
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "jax": jax.__version__,
        "jaxlib": _jaxlib_version(),
        "backend": jax.default_backend(),
        "device_kind": dev.device_kind,
        "device_count": jax.device_count(),
    }


def _jaxlib_version() -> str:
    try:
        import jaxlib

        return jaxlib.__version__
    except Exception:
        return "unknown"


def hardware_line() -> str:
    """One line naming the CPU, the usable cores, the JAX backend and versions."""
    hw = hardware()
    return (
        f"{hw['cpu']}, {hw['usable_cores']} usable cores; jax {hw['jax']}, backend {hw['backend']} "
        f"({hw['device_kind']}); Python {hw['python']}"
    )


def loglog_slope(x: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope of ``log y`` against ``log x`` over the positive finite pairs (NaN if < 2)."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    if ok.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)[0])
