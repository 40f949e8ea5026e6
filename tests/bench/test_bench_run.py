"""``bench`` on a tiny export: JSON with p50/p90/p99, roofline, a PNG, skipped backends named."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from trt_pipeline.config import BenchConfig, ExportConfig

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def bench_export(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from trt_pipeline.export.exporter import export

    cfg = ExportConfig(max_batch=1, max_seq=64, max_kv=128, max_image_tokens=16, simplify=False, validate=False)
    return export(tiny_checkpoint, tmp_path_factory.mktemp("bench") / "tiny", cfg, show_progress=False)


def _fast(**kwargs) -> BenchConfig:
    base = dict(prompt_lengths=(8, 32, 1000), context_lengths=(16, 64), warmup=1, iterations=3, decode_steps=4,
                bandwidth_mib=16, bandwidth_repeats=1, threads=2, isolate=False)
    return BenchConfig(**{**base, **kwargs})


def test_bench_in_process_writes_percentiles_roofline_png_and_skips(bench_export: Path, capsys) -> None:
    from trt_pipeline.bench.run import bench

    report = bench(bench_export, _fast(backends=("torch", "torch-export", "ort-fp32", "ort-fp16", "trt-fp16")),
                   show_progress=False)
    assert report and set(report.measured) == {"torch", "torch-export", "ort-fp32"}
    data = json.loads((bench_export / "reports" / "bench.json").read_text())
    assert (bench_export / "reports" / "bench.png").read_bytes()[:8] == PNG_MAGIC
    assert data["backends"]["ort-fp16"]["status"] == "skipped" and "onnx/fp16" in data["backends"]["ort-fp16"]["reason"]
    assert data["backends"]["trt-fp16"]["status"] == "skipped"
    assert any("1000" in note for note in data["notes"])  # outside sequence_length 1..64: dropped, said so
    for name in report.measured:
        entry = data["backends"][name]
        assert [r["length"] for r in entry["prefill"]] == [8, 32]
        assert [r["context"] for r in entry["decode"]] == [16, 64]
        for row in entry["prefill"] + entry["decode"]:
            assert 0 < row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"] <= row["max_ms"]
            assert row["tokens_per_s"] > 0
        assert entry["decode"][0]["n"] == 4 and entry["prefill"][0]["n"] == 3
        assert entry["image_prefill"]["num_patches"] > 0
        assert entry["weight_bytes"] > 0 and entry["peak_rss_bytes"] > 0
    # ONNX decoder weights (lm_head + layers, no embedding table) equal the torch decoder's parameters
    assert data["backends"]["ort-fp32"]["weight_bytes"] == pytest.approx(data["backends"]["torch"]["weight_bytes"], rel=0.02)
    points = data["roofline"]
    assert {p["backend"] for p in points} == set(report.measured)
    for p in points:
        assert p["bytes_moved"] == p["weight_bytes"] + p["kv_bytes"]
        assert p["fraction"] == pytest.approx(p["lower_bound_ms"] / p["measured_ms"], rel=1e-3)
        assert 0 < p["fraction"] < 1.5
    assert {s["backend"] for s in data["speedups"]} == {"torch-export", "ort-fp32"}
    assert data["bandwidth"]["best_gbps"] > 0 and data["config"]["threads"] == 2
    assert "skipped: bench trt-fp16" in capsys.readouterr().err


def test_bench_isolated_child_reports_its_own_peak_rss(bench_export: Path) -> None:
    from trt_pipeline.bench.run import bench

    report = bench(bench_export, _fast(backends=("ort-fp32",), prompt_lengths=(8,), context_lengths=(16,), isolate=True),
                   show_progress=False)
    entry = report.backends["ort-fp32"]
    assert entry["memory_scope"] == "own child process"
    # a fresh interpreter with torch + onnxruntime: well below this test process's footprint
    assert 50e6 < entry["baseline_rss_bytes"] <= entry["peak_rss_bytes"] < 2e9


def test_bench_rejects_unknown_backend_and_lengths_outside_every_range(bench_export: Path) -> None:
    from trt_pipeline.bench.run import bench
    from trt_pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown bench backend"):
        bench(bench_export, _fast(backends=("onnx",)), show_progress=False)
    with pytest.raises(ConfigError, match="no bench length"):
        bench(bench_export, _fast(prompt_lengths=(500,), context_lengths=(900,)), show_progress=False)


def test_ort_backend_runs_host_torch_on_one_thread_and_torch_backends_repin(bench_export: Path) -> None:
    """The ORT backend times what `serve` runs (host torch ops on one thread, see runtime/host_threads.py);
    a torch backend measured after it in the same process gets the configured threads back."""
    import torch

    from trt_pipeline.bench.backends import BenchSetup, OrtBackend, TorchExportBackend

    before = torch.get_num_threads()
    try:
        setup = BenchSetup(bench_export, threads=2)
        ort = OrtBackend("ort-fp32", setup, "fp32")
        ort.load()
        assert torch.get_num_threads() == 1
        ort.close()
        torch_export = TorchExportBackend("torch-export", setup, None)
        torch_export.load()
        assert torch.get_num_threads() == 2
        torch_export.close()
    finally:
        torch.set_num_threads(before)


def test_a_run_without_image_cases_does_not_load_the_vision_encoder(bench_export: Path) -> None:
    """`--image-patches 0` measures no image, so the vision encoder's session is never made: the backend's
    peak RSS is the decoder's (the 9B's fp32 vision encoder is 3.6 GB). With an image case it is loaded and timed."""
    from trt_pipeline.bench.run import measure_backend

    common = dict(threads=1, prompt_lengths=[8], context_lengths=[16], warmup=0, iterations=1, decode_steps=2)
    without = measure_backend(str(bench_export), "ort-fp32", image_patches=0, **common)
    assert "image_prefill" not in without and [r["context"] for r in without["decode"]] == [16]
    assert "vision encoder not loaded: no image case is measured" in without["notes"]
    with_image = measure_backend(str(bench_export), "ort-fp32", image_patches=16, **common)
    assert with_image["image_prefill"]["num_patches"] == 16 and with_image["image_prefill"]["p50_ms"] > 0
    assert not any("vision encoder not loaded" in note for note in with_image["notes"])


def test_the_vision_runner_is_not_activated_when_the_setup_says_so(bench_export: Path) -> None:
    from trt_pipeline.bench.backends import BenchSetup, OrtBackend

    backend = OrtBackend("ort-fp32", BenchSetup(bench_export, threads=1, vision=False), "fp32")
    backend.load()
    try:
        assert backend.vision is None and backend.decoder.is_active
        assert backend.image_fn(16) is None
        step, after = backend.decode_fn(16)
        assert np.isfinite(np.asarray(step().outputs["logits"])).all()
        after()
    finally:
        backend.close()
