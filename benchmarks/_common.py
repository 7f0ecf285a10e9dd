"""Helpers shared by the one-thread micro-benchmarks (bench_maxsim.py, bench_pooling.py).

The scripts pin OMP/OpenBLAS/MKL to one thread themselves, before numpy is first imported; this
module is imported after that. ``torch`` is the torch module, or None where it is not installed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

try:
    import torch
except ImportError:  # torch is optional
    torch = None

__all__ = ["best_times", "sample", "torch"]


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
