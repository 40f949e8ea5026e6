"""Measured main-memory bandwidth of this machine (the denominator of the roofline).

Two NumPy kernels over arrays far larger than the last-level cache (default 256 MiB each):

* **copy**: ``np.copyto(dst, src)``; bytes moved = 2 x size (read ``src`` + write ``dst``; the
  write-allocate read that some CPUs add is *not* counted, which makes copy figures conservative);
* **read**: ``np.add.reduce`` (sum) over ``src``; bytes moved = size.

Each kernel runs single-threaded and split over ``threads`` Python threads (NumPy releases the GIL
in both loops), best of ``repeats`` runs. The roofline uses the best figure of all (the highest
bandwidth gives the smallest lower-bound time, i.e. the least flattering roofline fraction).
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class BandwidthResult:
    size_bytes: int
    repeats: int
    threads: int
    copy_gbps_1t: float
    copy_gbps: float  # with ``threads`` threads
    read_gbps_1t: float
    read_gbps: float

    @property
    def best_gbps(self) -> float:
        return max(self.copy_gbps_1t, self.copy_gbps, self.read_gbps_1t, self.read_gbps)

    @property
    def best_bytes_per_s(self) -> float:
        return self.best_gbps * 1e9

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "best_gbps": round(self.best_gbps, 3), "method": (
            "numpy copyto (2x bytes) and add.reduce (1x bytes) over arrays of size_bytes, "
            "1 thread and `threads` threads, best of `repeats`")}


def _chunks(n: int, parts: int) -> list[slice]:
    step = -(-n // parts)
    return [slice(i, min(i + step, n)) for i in range(0, n, step)]


def _best(fn: Any, repeats: int, now: Any = time.perf_counter_ns) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = now()
        fn()
        best = min(best, (now() - start) / 1e9)
    return best


def measure_bandwidth(size_mib: int = 256, repeats: int = 5, threads: int | None = None,
                      clock: str = "wall") -> BandwidthResult:
    """Best-of-``repeats`` copy and read bandwidth in GB/s (1e9 bytes/s).

    ``clock="cpu"`` times the single-thread figures in CPU time of the calling thread (as
    ``bench --clock cpu`` times decode steps), so a loaded machine does not depress them; the
    multi-thread figures are always wall-clock."""
    from trt_pipeline.bench.measure import CLOCKS

    one = CLOCKS[clock]
    threads = threads or os.cpu_count() or 1
    n = size_mib * 1024 * 1024 // 4
    src = np.ones(n, dtype=np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # fault every page in before timing
    size = src.nbytes
    slices = _chunks(n, threads)

    def copy_1t() -> None:
        np.copyto(dst, src)

    def read_1t() -> None:
        np.add.reduce(src)

    with ThreadPoolExecutor(max_workers=threads) as pool:

        def copy_mt() -> None:
            list(pool.map(lambda s: np.copyto(dst[s], src[s]), slices))

        def read_mt() -> None:
            list(pool.map(lambda s: np.add.reduce(src[s]), slices))

        copy_mt()
        results = {
            "copy_1t": 2 * size / _best(copy_1t, repeats, one),
            "copy_mt": 2 * size / _best(copy_mt, repeats),
            "read_1t": size / _best(read_1t, repeats, one),
            "read_mt": size / _best(read_mt, repeats),
        }
    return BandwidthResult(
        size_bytes=size, repeats=repeats, threads=threads,
        copy_gbps_1t=round(results["copy_1t"] / 1e9, 3), copy_gbps=round(results["copy_mt"] / 1e9, 3),
        read_gbps_1t=round(results["read_1t"] / 1e9, 3), read_gbps=round(results["read_mt"] / 1e9, 3),
    )


__all__ = ["BandwidthResult", "measure_bandwidth"]
