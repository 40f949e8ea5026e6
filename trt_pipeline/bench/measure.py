"""Timers with warm-up and percentiles.

Every latency figure of ``autoglm-trt bench`` comes from :func:`time_call`: ``warmup`` untimed calls
(first-call allocations, ONNX Runtime's lazy kernel selection, torch's first-run dispatch), then
``iterations`` calls timed one by one with :func:`time.perf_counter_ns`. Percentiles use linear
interpolation between order statistics (NumPy's default), so p99 of 10 samples is close to the
maximum; the sample count ``n`` is reported next to every percentile so readers can judge that.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

PERCENTILES = (50, 90, 99)
#: ``wall``: elapsed time. ``cpu``: CPU time of the calling thread, which is the whole step when the
#: runtime runs on that one thread (``--threads 1``): it does not count the time other processes of
#: a shared machine hold the core, so it stays comparable when the machine is loaded.
CLOCKS = {"wall": time.perf_counter_ns, "cpu": time.thread_time_ns}


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation (NumPy's ``linear`` method)."""
    if not values:
        raise ValueError("percentile of an empty sample")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be within [0, 100], got {q}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(rank), math.ceil(rank)
    if low == high:
        return float(ordered[low])
    return float(ordered[low] + (ordered[high] - ordered[low]) * (rank - low))


@dataclass
class Timing:
    """Wall-clock samples of one measured call, in seconds."""

    samples_s: list[float] = field(default_factory=list)
    warmup: int = 0

    @property
    def n(self) -> int:
        return len(self.samples_s)

    def p(self, q: float) -> float:
        return percentile(self.samples_s, q)

    def summary(self, tokens: int | None = None) -> dict[str, Any]:
        """p50/p90/p99/mean/min/max in milliseconds (+ tokens/s at p50 when ``tokens`` is given)."""
        ms = [s * 1e3 for s in self.samples_s]
        out: dict[str, Any] = {f"p{q}_ms": round(percentile(ms, q), 4) for q in PERCENTILES}
        out.update(
            mean_ms=round(sum(ms) / len(ms), 4),
            min_ms=round(min(ms), 4),
            max_ms=round(max(ms), 4),
            n=len(ms),
            warmup=self.warmup,
        )
        if tokens is not None:
            out["tokens_per_s"] = round(tokens / (out["p50_ms"] / 1e3), 2) if out["p50_ms"] > 0 else None
        return out


def time_call(
    fn: Callable[[], Any],
    *,
    warmup: int = 2,
    iterations: int = 10,
    after: Callable[[], Any] | None = None,
    clock: str = "wall",
) -> Timing:
    """Call ``fn`` ``warmup`` times untimed, then ``iterations`` times timed individually.

    ``after`` runs after every call outside the timed region (e.g. cropping a KV cache back to the
    measured context length); ``clock`` is a key of :data:`CLOCKS`.
    """
    if iterations < 1:
        raise ValueError("iterations must be >= 1")
    now = CLOCKS[clock]
    for _ in range(warmup):
        fn()
        if after is not None:
            after()
    samples = []
    for _ in range(iterations):
        start = now()
        fn()
        samples.append((now() - start) / 1e9)
        if after is not None:
            after()
    return Timing(samples, warmup)


__all__ = ["CLOCKS", "PERCENTILES", "Timing", "percentile", "time_call"]
