"""``compare`` on an ``--kv-cache inplace`` export: feeds, the transformers reference and the
torch-export candidate all in the export's cache layout ``[B, past + S, kv * D]``; it passes with the
same gates as the concat twin (``tiny_fused_export``) and measures the same numbers."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from trt_pipeline.config import CompareConfig, DimRange
from trt_pipeline.models.glm4v.io_spec import KvLayout

COMPARED = ("torch-export", "ort-fp32", "ort-fp16")


@pytest.fixture(scope="module")
def reports(tiny_inplace_export, tiny_fused_export, tmp_path_factory):
    """compare (fp32 and an fp16 variant, torch-export) of the inplace export and of its concat twin."""
    from trt_pipeline.compare import compare
    from trt_pipeline.config import Fp16Config
    from trt_pipeline.quantize.precision import make_fp16

    out = {}
    for name, export in (("inplace", tiny_inplace_export), ("concat", tiny_fused_export)):
        copy = tmp_path_factory.mktemp(f"compare-{name}") / "export"
        shutil.copytree(export, copy, ignore=shutil.ignore_patterns("fp16", "int8", "int4"))
        make_fp16(copy, Fp16Config(calib_samples=2, evaluate=False), show_progress=False)
        out[name] = compare(copy, CompareConfig(max_items=3, precisions=("fp32", "fp16")), show_progress=False)
    return out


def test_compare_of_an_inplace_export_passes_like_its_concat_twin(reports):
    inplace, concat = reports["inplace"], reports["concat"]
    assert inplace.passed and not inplace.failures and concat.passed
    assert [b["name"] for b in inplace.backends] == list(COMPARED)
    assert [s["label"] for s in inplace.samples["decoder"]] == [s["label"] for s in concat.samples["decoder"]]
    assert any(s["label"].startswith("extreme/") and s["past_sequence_length"] > 0 for s in inplace.samples["decoder"])
    for backend in COMPARED:
        tokens, twin_tokens = inplace.token_agreement(backend), concat.token_agreement(backend)
        assert tokens.passed and tokens.reference == twin_tokens.reference
        assert tokens.candidate == twin_tokens.candidate  # token for token what the concat twin generates
        for output in ("logits", "present.0.key", "present.1.value"):
            mine, theirs = inplace.stats(backend, output), concat.stats(backend, output)
            assert mine.passed
            # the same functions on the same inputs: the layouts' numbers agree to float32 noise
            # (fp16: to the rounding of one graph against the other)
            close = 1e-5 if backend != "ort-fp16" else 2e-3
            assert abs(mine.max_abs - theirs.max_abs) <= close, (backend, output, mine.max_abs, theirs.max_abs)
    for backend in ("torch-export", "ort-fp32"):
        tokens = inplace.token_agreement(backend)
        assert tokens.exact_match_rate == 1.0 and tokens.teacher_forced_agreement == 1.0
        assert inplace.stats(backend, "logits").cosine > 0.99999
    assert inplace.stats("ort-fp32", "logits").max_abs < 1e-4


@pytest.fixture(scope="module")
def reference_decoders(tiny_checkpoint):
    from trt_pipeline.models.glm4v.generation import HostAssets
    from trt_pipeline.models.glm4v.model import Glm4vExportModel
    from trt_pipeline.runtime.transformers_runner import TransformersDecoderRunner, TransformersReference

    reference = TransformersReference(tiny_checkpoint)
    assets = HostAssets.from_model(Glm4vExportModel.from_pretrained(tiny_checkpoint, dtype="float32"))
    return assets, {kind: TransformersDecoderRunner(reference, kv_cache=kind) for kind in ("concat", "inplace")}


def test_reference_decoder_reads_and_writes_the_inplace_layout(reference_decoders):
    """Same cache content in both layouts -> same logits, present converted by KvLayout; an inplace
    feed's free rows (the step's new positions) are ignored whatever they hold."""
    from trt_pipeline.compare.data import corner_samples

    assets, runners = reference_decoders
    layout = KvLayout.of(assets.dims, "inplace")
    ranges = {"batch_size": DimRange(1, 1, 2), "sequence_length": DimRange(1, 3, 3), "past_sequence_length": DimRange(0, 5, 5)}
    with runners["concat"], runners["inplace"]:
        assert runners["inplace"].get_input_metadata()["past_key_values.0.key"].shape == [None, None, layout.kv_heads * layout.head_dim]
        concat = corner_samples(assets, ranges, runners["concat"], seed=3)
        inplace = corner_samples(assets, ranges, runners["inplace"], seed=3)
        assert [s.label for s in concat] == [s.label for s in inplace] and len(concat) == 8
        for mine, theirs in zip(inplace, concat):
            new = mine.feed["inputs_embeds"].shape[1]
            cache = mine.feed["past_key_values.0.key"]
            assert cache.shape == layout.shape(mine.dims["batch_size"], mine.dims["past_sequence_length"] + new)
            assert np.allclose(layout.to_heads(layout.rows(cache, 0, cache.shape[1] - new)),
                               theirs.feed["past_key_values.0.key"], atol=1e-6)
            poisoned = {**mine.feed, **{name: value.copy() for name, value in mine.feed.items() if name.startswith("past_")}}
            for name in poisoned:
                if name.startswith("past_"):
                    layout.rows(poisoned[name], poisoned[name].shape[1] - new)[...] = 1e9
            expected = runners["concat"].infer(theirs.feed)
            for feed in (mine.feed, poisoned):
                out = runners["inplace"].infer(feed)
                assert float(np.abs(out["logits"] - expected["logits"]).max()) <= 1e-5, mine.label
                present = out["present.1.value"]
                assert present.shape == cache.shape
                assert float(np.abs(layout.to_heads(present) - expected["present.1.value"]).max()) <= 1e-5


def test_torch_export_candidate_traces_the_exported_flavour(tiny_inplace_export, tiny_checkpoint):
    from trt_pipeline.compare.runners import DiscoveryContext, discover_torch_export

    ctx = DiscoveryContext(tiny_inplace_export, CompareConfig(), tiny_checkpoint, ("decoder",))
    [backend], _ = discover_torch_export(ctx)
    runner = backend.runner("decoder")
    decoder = ctx.torch_model().decoder
    assert (decoder.ops, decoder.kv_cache) == ("fused", "inplace")
    with runner:
        assert len(runner.get_input_metadata()["past_key_values.0.key"].shape) == 3
