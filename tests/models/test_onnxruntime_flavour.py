"""The ``onnxruntime`` decoder flavour: com.microsoft GroupQueryAttention / SkipSimplifiedLayerNormalization
over a shared ``[B, kv, T, D]`` cache (issue 16's ORT-only graph, chosen at export time).

Its numbers are checked three ways: the export's own validation against transformers (every grid
point it can run), the traced module against the ``fused`` + ``inplace`` module at shapes with free
rows and left padding, and whole greedy generations through the stepper (the cache bound once per
buffer) against the ``fused`` + ``inplace`` export of the same checkpoint.
"""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import onnx
import pytest
import torch

from trt_pipeline.artifacts import read_export_manifest
from trt_pipeline.config import ExportConfig
from trt_pipeline.engine.onnx_ops import check_model
from trt_pipeline.errors import ConfigError
from trt_pipeline.models.glm4v.decoder_ops import KV_CACHES_OF, step_refusal
from trt_pipeline.models.glm4v.generation import HostAssets
from trt_pipeline.models.glm4v.io_spec import KvLayout
from trt_pipeline.models.glm4v.kv_arena import KvArena
from trt_pipeline.models.glm4v.stepper import DecoderStepper, runner_kv_cache
from trt_pipeline.runtime.onnxruntime_runner import onnx_path

from stepping import contract_of, decoder_runner, greedy

PROMPT = torch.arange(5, 17).view(1, -1)
DECODE_STEPS = 40


def test_the_graph_is_onnxruntime_contrib_ops_and_export_json_says_so(tiny_ort_export):
    manifest = read_export_manifest(tiny_ort_export)
    layers = manifest.checkpoint_dims["text"]["num_hidden_layers"]
    graph = onnx.load(str(onnx_path(tiny_ort_export, "fp32", "decoder")), load_external_data=False)
    ops = Counter((node.domain, node.op_type) for node in graph.graph.node)
    assert ops[("com.microsoft", "GroupQueryAttention")] == layers
    # every residual add + RMSNorm but the last (the final norm runs after the logits positions' Gather)
    assert ops[("com.microsoft", "SkipSimplifiedLayerNormalization")] == 2 * layers - 1
    assert not {op for _, op in ops} & {"Attention", "ScatterElements", "TensorScatter"}
    for node in graph.graph.node:  # the norms' mean / inv std-dev outputs nobody reads are not computed
        if node.op_type == "SkipSimplifiedLayerNormalization":
            assert list(node.output[1:3]) == ["", ""] and node.output[0] and node.output[3]
    cache = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.graph.input}
    assert cache["past_key_values.0.key"][2] == cache["attention_mask"][1] == "total_sequence_length"
    record = json.loads((tiny_ort_export / "export.json").read_text())["decoder_graph"]
    assert record["ops"] == "onnxruntime" and record["kv_cache"] == "shared" and record["kv_cache_free_rows"] is True
    assert manifest.decoder_ops == "onnxruntime" and manifest.kv_cache == "shared" and manifest.kv_free_rows
    # no TensorRT target parses it, and each says which ops
    for check in check_model(onnx_path(tiny_ort_export, "fp32", "decoder")):
        assert not check and "com.microsoft:GroupQueryAttention" in check.unsupported


def test_the_export_validated_against_transformers(tiny_ort_export):
    """The export's own validation ran every grid point GroupQueryAttention takes, and named the others."""
    report = json.loads((tiny_ort_export / "reports" / "validation.json").read_text())
    decoder = [r for r in report["results"] if r["component"] == "decoder"]
    assert decoder and all(r["passed"] for r in report["results"])
    assert max(r["max_abs"] for r in decoder if r["output"] == "logits") <= 1e-4
    skipped = report["decoder_points_not_run"]  # the stepper runs these one row at a time (the batched-chunk test)
    assert skipped and all(p["batch_size"] > 1 and p["sequence_length"] > 1 and p["past_sequence_length"] > 0
                           for p in skipped)
    run = {(r["point"]["batch_size"], r["point"]["sequence_length"], r["point"]["past_sequence_length"]) for r in decoder}
    assert any(b > 1 and s == 1 and p > 0 for b, s, p in run)  # batched decode onto a cache was checked
    assert any(b > 1 and p == 0 for b, s, p in run)  # and batched prefill


def test_the_traced_module_equals_the_fused_inplace_module(tiny_checkpoint):
    """Eager: GroupQueryAttention / SkipSimplifiedLayerNormalization's math vs opset-23 Attention + scatter,
    with free rows after the attended ones and a left-padded batch."""
    from trt_pipeline.models.glm4v.model import Glm4vExportModel

    reference = Glm4vExportModel.from_pretrained(tiny_checkpoint, dtype="float32").decoder.use_graph("fused", "inplace")
    model = Glm4vExportModel.from_pretrained(tiny_checkpoint, dtype="float32")
    decoder = model.decoder.use_graph("onnxruntime", "shared")
    text = model.dims.text
    shared, inplace = KvLayout.of(model.dims, "shared"), KvLayout.of(model.dims, "inplace")
    generator = torch.Generator().manual_seed(0)
    for past, new, free, batch in ((0, 7, 0, 1), (9, 1, 5, 1), (9, 4, 3, 1), (0, 6, 0, 2), (5, 1, 2, 2)):
        embeds = torch.randn(batch, new, text.hidden_size, generator=generator)
        cos, sin = torch.randn(2, batch, new, text.rotary_dim, generator=generator)
        caches = [torch.randn(*shared.shape(batch, past + new + free), generator=generator)
                  for _ in range(2 * text.num_hidden_layers)]
        mask = torch.ones(batch, past + new, dtype=torch.long)
        mask[1:, :2] = 0  # the second row left-padded
        positions = torch.arange(new)
        with torch.no_grad():
            expected = reference(embeds, mask, cos, sin, positions,
                                 *[inplace.from_heads(c[:, :, :past + new]).contiguous() for c in caches])
            got = decoder(embeds, torch.nn.functional.pad(mask, (0, free)), cos, sin, positions, *[c.clone() for c in caches])
        assert float((expected[0] - got[0]).abs().max()) <= 1e-5, (past, new, free, batch)
        for want, have in zip(expected[1:], got[1:]):  # the new rows land at past .. past + new - 1
            assert float((inplace.to_heads(want) - have[:, :, :past + new]).abs().max()) <= 1e-5


@pytest.mark.parametrize("chunk_size", [None, 5])
def test_generation_matches_the_fused_inplace_export(tiny_ort_export, tiny_inplace_export, chunk_size):
    """Greedy prefill + 40 decode steps through the stepper: the same tokens and logits as the fused inplace
    export of the same checkpoint; the shared cache is fed whole and written in place."""
    with decoder_runner(tiny_inplace_export) as runner:
        stepper = DecoderStepper(HostAssets.from_export_dir(tiny_inplace_export), runner,
                                 contract=contract_of(tiny_inplace_export))
        expected, expected_tokens = greedy(stepper, PROMPT, DECODE_STEPS, chunk_size)
    with decoder_runner(tiny_ort_export) as runner:
        assert runner_kv_cache(runner) == "shared"
        stepper = DecoderStepper(HostAssets.from_export_dir(tiny_ort_export), runner, contract=contract_of(tiny_ort_export))
        assert stepper.arena.block is not None and stepper.kept is not None
        logits, tokens = greedy(stepper, PROMPT, DECODE_STEPS, chunk_size)
        step = stepper.decode(torch.tensor([9]))
        fed = step.feed["past_key_values.0.key"]
        length = PROMPT.shape[1] + DECODE_STEPS + 1
        assert fed is stepper.arena.bound["past_key_values.0.key"] and fed.shape[2] == stepper.arena.capacity > length
        assert step.outputs["present.0.key"] is fed  # written in place
        assert stepper.state.past["past_key_values.0.key"].shape == (1, 2, length, 32)
        assert not step.feed["attention_mask"][0, length:].any()
    assert tokens == expected_tokens
    assert float((logits - expected).abs().max()) <= 1e-4
    assert float(torch.nn.functional.cosine_similarity(logits.flatten(), expected.flatten(), dim=0)) > 0.99999


def test_without_io_binding_the_cache_is_fed_exactly(tiny_ort_export):
    """A runner that allocates its outputs gets exactly sized copies (no free rows: GroupQueryAttention would
    not write them into the fed array), with the numbers of the bound run."""
    assets = HostAssets.from_export_dir(tiny_ort_export)
    with decoder_runner(tiny_ort_export) as bound:
        expected, _ = greedy(DecoderStepper(assets, bound, contract=contract_of(tiny_ort_export)), PROMPT, 12)
    with decoder_runner(tiny_ort_export, io_binding=False) as plain:
        stepper = DecoderStepper(assets, plain, contract=contract_of(tiny_ort_export))
        assert stepper.arena.block is None
        logits, _ = greedy(stepper, PROMPT, 12)
        step = stepper.decode(torch.tensor([3]))
        assert step.feed["past_key_values.0.key"].shape[2] == step.feed["attention_mask"].shape[1]
    assert float((logits - expected).abs().max()) <= 1e-5


def left_padded_batch(stepper: DecoderStepper) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Embeddings, mask and M-RoPE positions of two text prompts, the second left-padded by 3."""
    ids = torch.arange(5, 23).view(2, 9)
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, :3] = 0
    positions = (mask.cumsum(1) - 1).clamp(min=0).expand(3, -1, -1)
    return stepper.builder.token_embeddings(ids), mask, positions


@pytest.mark.parametrize("chunk_size", [4, 1])
def test_a_batchs_chunks_onto_a_filled_cache_run_one_row_at_a_time(tiny_ort_export, tiny_inplace_export, chunk_size):
    """GroupQueryAttention takes several new tokens onto a filled cache for a batch of one only: the stepper
    runs a batch's later chunks row by row (its first chunk and its decode steps in one call each). A
    left-padded batch prefilled in chunks, then decoded: the logits of the fused inplace export, whose graph
    takes every call whole. Feeding such a chunk straight to the graph is refused."""
    assert step_refusal("shared", 2, 4, 8) and not step_refusal("shared", 2, 4, 0)
    assert not (step_refusal("shared", 2, 1, 8) or step_refusal("shared", 1, 4, 8) or step_refusal("inplace", 2, 4, 8))
    results = []
    for export in (tiny_inplace_export, tiny_ort_export):
        with decoder_runner(export) as runner:
            stepper = DecoderStepper(HostAssets.from_export_dir(export), runner, contract=contract_of(export))
            stepper.reset(2)
            embeds, mask, positions = left_padded_batch(stepper)
            logits = [stepper.prefill(embeds, mask, positions, logits="all", chunk_size=chunk_size).logits[:, 3:]]
            for token in (7, 11, 13, 17, 19):
                logits.append(stepper.decode(torch.tensor([token, token + 1])).logits)
            results.append(torch.cat(logits, dim=1))
            if export == tiny_ort_export:
                assert stepper.state.past["past_key_values.0.key"].shape == (2, 2, 14, 32)
                stepper.reset(2)
                stepper.prefill(embeds[:, :4], mask[:, :4], positions[:, :, :4])
                with pytest.raises(ValueError, match="one row at a time"):  # one call's feed for the whole batch
                    stepper.prepare(embeds[:, 4:], mask[:, 4:], positions[:, :, 4:])
    expected, got = results
    assert float((got - expected).abs().max()) <= 1e-4
    assert float(torch.nn.functional.cosine_similarity(got.flatten(), expected.flatten(), dim=0)) > 0.99999


def test_flavour_and_cache_pairs():
    assert ExportConfig(decoder_ops="onnxruntime").kv_cache == "shared"  # the flavour's own cache by default
    assert ExportConfig(decoder_ops="fused").kv_cache == "concat" and ExportConfig().kv_cache == "concat"
    assert KV_CACHES_OF["onnxruntime"] == ("shared",)
    for ops, kv in (("onnxruntime", "inplace"), ("onnxruntime", "concat"), ("fused", "shared"), ("portable", "shared"),
                    ("portable", "inplace")):
        with pytest.raises(ConfigError, match=f"--kv-cache {kv} needs --decoder-ops .*got {ops}") as caught:
            ExportConfig(decoder_ops=ops, kv_cache=kv)
        assert f"--decoder-ops {ops} takes --kv-cache" in caught.value.hint
    with pytest.raises(ConfigError, match="too old for --decoder-ops onnxruntime"):
        ExportConfig(decoder_ops="onnxruntime", opset=21)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_exports_of_the_flavour_are_refused(tiny_checkpoint, tmp_path, dtype):
    from trt_pipeline.export.exporter import export

    out = tmp_path / "out"
    with pytest.raises(ConfigError, match=f"--decoder-ops onnxruntime with --dtype {dtype}") as caught:
        export(tiny_checkpoint, out, ExportConfig(decoder_ops="onnxruntime", dtype=dtype, validate=False),
               show_progress=False)
    assert "--dtype float32" in caught.value.hint
    assert not out.exists()


def test_module_api_refuses_a_cache_the_flavour_cannot_trace(tiny_checkpoint):
    from trt_pipeline.models.glm4v.model import Glm4vExportModel

    decoder = Glm4vExportModel.from_pretrained(tiny_checkpoint, dtype="float32").decoder
    with pytest.raises(ValueError, match="cannot trace a inplace KV cache|cannot trace a inplace"):
        decoder.use_graph("onnxruntime", "inplace")
    with pytest.raises(ValueError, match="shared"):
        decoder.use_graph("fused", "shared")
    decoder.use_graph("onnxruntime", "shared")
    with pytest.raises(ValueError, match="use_graph"):
        decoder.use_ops("fused")  # the shared cache stays: refused, the decoder unchanged
    assert decoder.ops == "onnxruntime"


def test_shared_arena_feeds_whole_buffers_and_copies_for_a_saved_reader():
    layout = KvLayout("shared", 2, 4)
    arena = KvArena(layout, block=16, max_rows=100)
    state = {"k": np.arange(2 * 5 * 4, dtype=np.float32).reshape(1, 2, 5, 4)}
    fed = arena.feed(state, 1)
    buffer = arena.buffers["k"]
    assert fed["k"].shape[2] == arena.capacity >= 6 and fed["k"].flags.c_contiguous and fed["k"].base is buffer
    assert np.array_equal(fed["k"][:, :, :5], state["k"]) and not fed["k"][:, :, 5:].any()  # free rows zeroed
    handed = arena.handed["k"]
    assert handed.shape == (1, 2, 6, 4) and handed.base is buffer
    again = arena.feed(dict(arena.handed), 1)  # the next step: the same objects, nothing copied
    assert again["k"] is fed["k"] and arena.handed["k"].shape[2] == 7
    saved = dict(arena.handed)  # someone keeps this state; a step from an older one must not write under it
    older = {"k": layout.rows(buffer, 0, 6)}
    arena.feed(older, 1)
    assert arena.buffers["k"] is not buffer and np.array_equal(saved["k"][:, :, :6], layout.rows(buffer, 0, 6))
    big = {"k": np.ones((1, 2, 90, 4), np.float32)}
    grown = arena.feed(big, 1)
    assert grown["k"].shape[2] == 100  # capped at the graph's longest cache, fed whole
    with pytest.raises(ValueError, match=r"shared KV cache holds \[batch, kv_heads, positions, head_dim\]"):
        arena.feed({"k": np.zeros((1, 5, 8), np.float32)}, 1)
    exact = KvArena(layout).feed(state, 2)["k"]  # no blocks: an exactly sized copy
    assert exact.shape == (1, 2, 7, 4) and exact.flags.c_contiguous and np.array_equal(exact[:, :, :5], state["k"])


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_half_and_int8_variants_of_the_flavour_are_refused(tiny_ort_export, tmp_path, precision):
    import shutil

    from trt_pipeline.config import Fp16Config, Int8Config
    from trt_pipeline.quantize.precision import make_fp16, make_int8

    out = tmp_path / "export"
    shutil.copytree(tiny_ort_export, out)
    make, cfg = (make_fp16, Fp16Config(calib_samples=2, evaluate=False)) if precision == "fp16" else \
        (make_int8, Int8Config(calib_samples=2, evaluate=False))
    with pytest.raises(ConfigError, match=f"onnxruntime` export: its decoder has no {precision} variant") as caught:
        make(out, cfg, show_progress=False)
    assert "precision int4 --activations fp32" in caught.value.hint
    assert not (out / "onnx" / precision).exists()


def test_tensorrt_build_and_bundle_refuse_the_flavour(tiny_ort_export, tmp_path):
    """Before looking for TensorRT (none here): the build names the flavour and what to re-export with; a
    bundle for any target names the contrib ops."""
    from trt_pipeline.bundle.tensorrt_bundle import refuse_unparseable
    from trt_pipeline.bundle.targets import get_target
    from trt_pipeline.engine.builder import refuse_onnxruntime_flavour

    with pytest.raises(ConfigError, match="exported with `--decoder-ops onnxruntime`") as caught:
        refuse_onnxruntime_flavour(tiny_ort_export)
    assert "--decoder-ops fused" in caught.value.hint and "--decoder-ops portable" in caught.value.hint
    for target in ("x86-trt11", "jetson-orin-jp6"):
        with pytest.raises(ConfigError, match="com.microsoft:GroupQueryAttention") as caught:
            refuse_unparseable(tiny_ort_export, get_target(target), "fp32")
        assert "--decoder-ops onnxruntime" in caught.value.hint


def test_a_streamed_export_of_the_flavour_validates_on_its_twin(tiny_checkpoint, tmp_path, monkeypatch):
    """The weight-free trace (how the real 9B is exported) emits the same contrib ops, and the streamed
    graph passes its twin validation."""
    from trt_pipeline.export.exporter import export
    from trt_pipeline.export.twin_validate import validate_export

    out = export(tiny_checkpoint, tmp_path / "streamed", ExportConfig(max_seq=32, max_kv=48, max_image_tokens=64,
                                                                     streaming=True, decoder_ops="onnxruntime",
                                                                     validate=False), show_progress=False)
    graph = onnx.load(str(onnx_path(out, "fp32", "decoder")), load_external_data=False)
    ops = Counter(node.op_type for node in graph.graph.node)
    layers = read_export_manifest(out).checkpoint_dims["text"]["num_hidden_layers"]
    assert ops["GroupQueryAttention"] == layers and ops["SkipSimplifiedLayerNormalization"] == 2 * layers - 1
    monkeypatch.chdir(tmp_path)
    twin = validate_export("streamed", mode="twin", show_progress=False)
    assert twin.mode == "twin" and twin.passed
    worst = max(result.max_abs for result in twin.results if result.component == "decoder" and result.output == "logits")
    assert worst <= 1e-4
