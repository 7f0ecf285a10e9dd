"""Helpers shared by the benchmark scripts (timing loops, the machine's description, the
optional torch import).

The scripts pin OMP/OpenBLAS/MKL to one thread themselves, before numpy is first imported; this
module is imported after that. ``torch`` is the torch module, or None where it is not installed.
"""

from __future__ import annotations

import gc
import importlib.metadata
import platform
import time
from collections.abc import Callable, Mapping

try:
    import torch
except ImportError:  # torch is optional
    torch = None

__all__ = ["best_times", "cpu_model", "sample", "time_cases", "torch", "version"]


def version(dist: str) -> str:
    """The installed version of a distribution, or "not installed"."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what the platform module knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def sample(fn: Callable[[], object], min_s: float = 0.1) -> float:
    """Seconds per call of fn, repeating it for at least min_s."""
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= min_s:
            return elapsed / n


def best_times(engines: Mapping[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Best seconds per call of every engine over rounds, the engines in a rotating order."""
    best = dict.fromkeys(engines, float("inf"))
    names = list(engines)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:  # rotating order
            best[name] = min(best[name], sample(engines[name]))
    return best


def time_cases(
    cases: dict[str, Callable[[], object]], repeat: int, min_sample_s: float = 0.2
) -> dict[str, list[float]]:
    """Seconds per call of each case: warm-up, then `repeat` interleaved samples each.

    The order of the cases rotates between rounds, so that slow drifts of the machine
    spread over all of them. The garbage collector is paused while a sample runs.
    """
    calls = {}
    for name, fn in cases.items():
        t0 = time.perf_counter()
        fn()  # warm-up: JIT compilation, caches, lazy initialisation
        first = time.perf_counter() - t0
        calls[name] = max(1, int(min_sample_s / max(first, 1e-9)))
    names = list(cases)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeat):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            fn, n = cases[name], calls[name]
            gc.collect()
            gc.disable()
            try:
                t0 = time.perf_counter()
                for _ in range(n):
                    fn()
                times[name].append((time.perf_counter() - t0) / n)
            finally:
                gc.enable()
    return times
