"""Timers, percentiles, memory helpers, bandwidth, child-process isolation, backend registry."""

from __future__ import annotations

import numpy as np
import pytest

from trt_pipeline.bench.measure import Timing, percentile, time_call
from trt_pipeline.errors import ConfigError


def test_percentile_matches_numpy_linear():
    rng = np.random.default_rng(0)
    values = list(rng.random(37))
    for q in (0, 1, 50, 90, 99, 100):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))
    assert percentile([3.0], 99) == 3.0
    with pytest.raises(ValueError):
        percentile([], 50)


def test_time_call_warms_up_then_times_each_call_and_runs_after_outside():
    calls, afters = [], []
    timing = time_call(lambda: calls.append(1), warmup=3, iterations=5, after=lambda: afters.append(1))
    assert len(calls) == 8 and len(afters) == 8
    assert timing.n == 5 and timing.warmup == 3
    summary = Timing([0.001, 0.002, 0.003, 0.004], warmup=1).summary(tokens=10)
    assert summary["p50_ms"] == pytest.approx(2.5)
    assert summary["p90_ms"] <= summary["p99_ms"] <= summary["max_ms"] == pytest.approx(4.0)
    assert summary["tokens_per_s"] == pytest.approx(10 / 0.0025)
    assert summary["n"] == 4


def test_peak_rss_is_at_least_current_and_sampler_sees_allocation():
    from trt_pipeline.bench.memory import RssSampler, current_rss_bytes, peak_rss_bytes

    assert peak_rss_bytes() >= current_rss_bytes() > 0
    with RssSampler(interval_s=0.001) as sampler:
        sampler.phase("alloc")
        block = np.ones(64 * 1024 * 1024 // 8)  # 64 MB, touched
        sampler.phase("after")
        del block
    assert sampler.phase_peaks["alloc"] >= sampler.phase_peaks["start"] + 50e6


def test_run_isolated_returns_result_memory_and_reraises_typed_errors():
    from trt_pipeline.bench.memory import run_isolated

    result = run_isolated("trt_pipeline.bench.measure:percentile", {"values": [1.0, 2.0, 3.0], "q": 50}, preload=("numpy",))
    assert result.result == 2.0
    assert result.peak_rss_bytes >= result.baseline_rss_bytes > 0
    with pytest.raises(ConfigError, match="threads must be >= 1"):
        run_isolated("trt_pipeline.config:BenchConfig", {"threads": 0})


def test_bandwidth_is_positive_and_best_is_the_max():
    from trt_pipeline.bench.bandwidth import measure_bandwidth

    result = measure_bandwidth(size_mib=16, repeats=2, threads=2)
    values = [result.copy_gbps_1t, result.copy_gbps, result.read_gbps_1t, result.read_gbps]
    assert all(v > 0 for v in values)
    assert result.best_gbps == max(values)
    assert result.to_dict()["best_gbps"] == pytest.approx(max(values), rel=1e-3)


def test_backend_registry_parses_names_and_rejects_unknown():
    from trt_pipeline.bench.backends import OrtBackend, TensorRTBackend, TorchExportBackend, TransformersBackend, parse_backend

    assert parse_backend("torch") == (TransformersBackend, None)
    assert parse_backend("torch-export") == (TorchExportBackend, None)
    assert parse_backend("ort-fp16") == (OrtBackend, "fp16")
    assert parse_backend("trt-int8") == (TensorRTBackend, "int8")
    for bad in ("ort", "ort-bf16", "onnx-fp32", "trt"):
        with pytest.raises(ConfigError, match="unknown bench backend"):
            parse_backend(bad)


def test_bench_config_validation():
    from trt_pipeline.config import BenchConfig

    assert BenchConfig(prompt_lengths=[8, 16]).prompt_lengths == (8, 16)
    with pytest.raises(ConfigError):
        BenchConfig(prompt_lengths=())
    with pytest.raises(ConfigError):
        BenchConfig(context_lengths=(0,))
    with pytest.raises(ConfigError):
        BenchConfig(threads=0)


def test_cpu_clock_does_not_count_time_off_the_cpu() -> None:
    """``clock="cpu"`` times the calling thread's CPU: a sleep (the core held by someone else) is not counted."""
    import time

    wall = time_call(lambda: time.sleep(0.03), warmup=0, iterations=2)
    cpu = time_call(lambda: time.sleep(0.03), warmup=0, iterations=2, clock="cpu")
    assert wall.p(50) >= 0.03
    assert cpu.p(50) < 0.01


def test_cpu_clock_needs_one_thread() -> None:
    from trt_pipeline.config import BenchConfig
    from trt_pipeline.errors import ConfigError

    assert BenchConfig(clock="cpu", threads=1).clock == "cpu"
    for bad in ({"clock": "cpu", "threads": 2}, {"clock": "cpu"}, {"clock": "gpu", "threads": 1}):
        with pytest.raises(ConfigError):
            BenchConfig(**bad)


def test_peak_rss_of_another_process_is_its_own():
    """``peak_rss_bytes(pid)`` reads that process's high-water mark (a server's, in serve_request.py): a child
    that touches 200 MB reports at least that."""
    import subprocess
    import sys

    from trt_pipeline.bench.memory import current_rss_bytes, peak_rss_bytes

    child = subprocess.Popen([sys.executable, "-c", "import sys, numpy; b = numpy.ones(25_000_000); "
                              "sys.stdout.write('ready\\n'); sys.stdout.flush(); sys.stdin.read()"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
        peak = peak_rss_bytes(child.pid)
        assert peak >= current_rss_bytes(child.pid) >= 200e6
    finally:
        child.communicate("")
