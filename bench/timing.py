"""What the benchmarks share."""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["rate"]


def rate(n: int, fn: Callable[[], object]) -> float:
    """Calls of ``fn`` per second over ``n`` back-to-back calls."""
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return n / (time.perf_counter() - t)
