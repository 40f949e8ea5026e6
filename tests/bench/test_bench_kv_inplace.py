"""``bench`` on an ``--kv-cache inplace`` export: it runs, records the export's cache layout and how each
backend's decode step updated the cache, and the roofline counts the KV bytes that step really moved
(the cache read once plus only the new row in place, against a whole copy for the concat twin)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from trt_pipeline.bench.roofline import decode_kv_bytes, kv_cache_bytes
from trt_pipeline.config import BenchConfig

CONTEXTS = (16, 64)


def _fast(**kwargs) -> BenchConfig:
    base = dict(prompt_lengths=(8,), context_lengths=CONTEXTS, warmup=1, iterations=2, decode_steps=3,
                bandwidth_mib=16, bandwidth_repeats=1, threads=1, isolate=False, image_patches=0)
    return BenchConfig(**{**base, **kwargs})


@pytest.fixture(scope="module")
def benched(tiny_inplace_export: Path, tiny_fused_export: Path, tmp_path_factory: pytest.TempPathFactory):
    """bench.json of the inplace export (IO-bound and plain ORT, torch-export) and of its concat twin."""
    from trt_pipeline.bench.run import bench

    out = {}
    for name, export, cfg in (
        ("inplace", tiny_inplace_export, _fast(backends=("torch-export", "ort-fp32"))),
        ("inplace-unbound", tiny_inplace_export, _fast(backends=("ort-fp32",), io_binding=False)),
        ("concat", tiny_fused_export, _fast(backends=("ort-fp32",))),
    ):
        copy = tmp_path_factory.mktemp(f"bench-{name}") / "export"
        shutil.copytree(export, copy)
        report = bench(copy, cfg, show_progress=False)
        assert report and set(report.measured) == set(cfg.backends)
        out[name] = json.loads((copy / "reports" / "bench.json").read_text())
    return out


def _kv(data: dict, context: int, update: str) -> int:
    from trt_pipeline.models.glm4v.config import load_dims

    text = load_dims(Path(data["out_dir"]) / "hf").text
    return decode_kv_bytes(text.num_hidden_layers, text.num_key_value_heads, text.head_dim, context, 1, 4, update)


def test_bench_of_an_inplace_export_records_its_cache_and_in_place_steps(benched) -> None:
    data = benched["inplace"]
    assert data["config"]["kv_cache"] == "inplace"
    ort = data["backends"]["ort-fp32"]
    assert (ort["kv_cache"], ort["kv_update"]) == ("inplace", "in place")
    assert any("blocks of 16 rows" in note and "KeptDecode" in note for note in ort["notes"])  # the decode path is recorded
    assert [row["context"] for row in ort["decode"]] == list(CONTEXTS) and all(r["p50_ms"] > 0 for r in ort["decode"])
    torch_export = data["backends"]["torch-export"]
    assert torch_export["kv_cache"] == "inplace" and torch_export["kv_update"] in ("in place", "copy")
    # the same step without IO binding: ONNX Runtime's ScatterElements writes a new array, a whole copy
    unbound = benched["inplace-unbound"]["backends"]["ort-fp32"]
    assert (unbound["kv_cache"], unbound["kv_update"]) == ("inplace", "copy")
    assert not any("blocks of" in note for note in unbound["notes"])  # a copying runner is fed exactly
    concat = benched["concat"]
    assert concat["config"]["kv_cache"] == "concat"
    assert (concat["backends"]["ort-fp32"]["kv_cache"], concat["backends"]["ort-fp32"]["kv_update"]) == ("concat", "copy")


def test_roofline_counts_what_each_step_moved(benched) -> None:
    for name, update in (("inplace", "in place"), ("inplace-unbound", "copy"), ("concat", "copy")):
        points = [p for p in benched[name]["roofline"] if p["backend"] == "ort-fp32"]
        assert [p["context"] for p in points] == list(CONTEXTS)
        for p in points:
            assert p["kv_update"] == update and p["kv_bytes"] == _kv(benched[name], p["context"], update)
            assert p["bytes_moved"] == p["weight_bytes"] + p["kv_bytes"]
    # in place: the cache once plus one row; a copy: three times the cache plus one row
    data = benched["inplace"]
    from trt_pipeline.models.glm4v.config import load_dims

    text = load_dims(Path(data["out_dir"]) / "hf").text
    cache, row = (kv_cache_bytes(text.num_hidden_layers, text.num_key_value_heads, text.head_dim, n) for n in (64, 1))
    in_place = next(p for p in data["roofline"] if p["backend"] == "ort-fp32" and p["context"] == 64)
    copied = next(p for p in benched["concat"]["roofline"] if p["context"] == 64)
    assert in_place["kv_bytes"] == cache + row and copied["kv_bytes"] == 3 * cache + row
    # the same weights (the inplace graph's few extra index constants aside)
    assert in_place["weight_bytes"] == pytest.approx(copied["weight_bytes"], rel=1e-4)
