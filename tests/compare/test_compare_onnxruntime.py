"""``compare`` on an ``--decoder-ops onnxruntime`` export: the transformers reference, the torch-export
candidate (the contrib ops' torch math) and ONNX Runtime (GroupQueryAttention over the shared cache)
pass the default gates and measure the numbers of the fused twin (``tiny_fused_export``)."""

from __future__ import annotations

import shutil

import pytest

from trt_pipeline.config import CompareConfig

COMPARED = ("torch-export", "ort-fp32")


@pytest.fixture(scope="module")
def reports(tiny_ort_export, tiny_fused_export, tmp_path_factory):
    from trt_pipeline.compare import compare

    out = {}
    for name, export in (("onnxruntime", tiny_ort_export), ("fused", tiny_fused_export)):
        copy = tmp_path_factory.mktemp(f"compare-{name}") / "export"
        shutil.copytree(export, copy, ignore=shutil.ignore_patterns("fp16", "int8", "int4"))
        out[name] = compare(copy, CompareConfig(max_items=3, precisions=("fp32",)), show_progress=False)
    return out


def test_compare_of_the_onnxruntime_flavour_passes_like_its_fused_twin(reports):
    mine, twin = reports["onnxruntime"], reports["fused"]
    assert mine.passed and not mine.failures and twin.passed
    assert [b["name"] for b in mine.backends] == list(COMPARED)
    # every sample of the twin but the corner GroupQueryAttention cannot run (a batch's chunk onto a filled
    # cache), which the report names instead
    refused = [s["label"] for s in twin.samples["decoder"]
               if s["batch_size"] > 1 and s["sequence_length"] > 1 and s["past_sequence_length"] > 0]
    assert refused and [s["label"] for s in mine.samples["decoder"]] == \
        [s["label"] for s in twin.samples["decoder"] if s["label"] not in refused]
    assert all(any(f"skipped {label}: " in note and "batch of one only" in note for note in mine.notes) for label in refused)
    assert any(s["past_sequence_length"] > 0 and s["batch_size"] > 1 for s in mine.samples["decoder"])
    for backend in COMPARED:
        tokens, twin_tokens = mine.token_agreement(backend), twin.token_agreement(backend)
        assert tokens.passed and tokens.candidate == twin_tokens.candidate
        assert tokens.exact_match_rate == 1.0 and tokens.teacher_forced_agreement == 1.0
        for output in ("logits", "present.0.key", "present.1.value"):
            stats, theirs = mine.stats(backend, output), twin.stats(backend, output)
            assert stats.passed and abs(stats.max_abs - theirs.max_abs) <= 1e-5, (backend, output)
    assert mine.stats("ort-fp32", "logits").max_abs < 1e-4
    assert mine.stats("ort-fp32", "logits").cosine > 0.99999
