"""``export --kv-cache inplace``: the same numbers as the concat cache, with the cache written in place.

The inplace decoder takes each cache tensor as ``[B, past + S, kv * D]`` and returns it with the
new rows written (ScatterElements). Checked here against the fused concat export of the same tiny
checkpoint (same ops otherwise), over ONNX Runtime with and without IO binding and over the
export's torch modules: logits and greedy tokens for one row and a left-padded batch, chunked
prefill, and that the bound runner really writes into the fed buffer (no new cache per step).
The host's :class:`~trt_pipeline.models.glm4v.kv_arena.KvArena` must never change a saved state.
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
from trt_pipeline.errors import ConfigError
from trt_pipeline.models.glm4v.generation import HostAssets
from trt_pipeline.models.glm4v.io_spec import KvLayout
from trt_pipeline.models.glm4v.kv_arena import KvArena
from trt_pipeline.models.glm4v.stepper import DecoderStepper
from trt_pipeline.runtime.onnxruntime_runner import OrtSettings, onnx_path, ort_runner

PROMPTS = {
    "one-row": ["Open Settings and turn on Wi-Fi"],
    "padded-batch": ["Open Settings", "打开微信给张三发消息说我晚点到，然后返回桌面"],
}
DECODE_STEPS = 10


def decoder_runner(export_dir, io_binding: bool = True):
    settings = OrtSettings(intra_op_threads=1, io_binding=io_binding)
    return ort_runner(onnx_path(export_dir, "fp32", "decoder"), settings=settings)


def greedy(export_dir, prompts: list[str], processing, chunk_size: int | None, io_binding: bool = True):
    """(logits of the prompt's last position and every decode step [B, 1 + steps, vocab], tokens [B, steps])."""
    assets = HostAssets.from_export_dir(export_dir)
    runner = decoder_runner(export_dir, io_binding)
    with runner:
        stepper = DecoderStepper(assets, runner, chunk_size=chunk_size)
        out = stepper.prefill_prompt(processing(prompts, [[] for _ in prompts]))
        logits, tokens = [out.logits], []
        for _ in range(DECODE_STEPS):
            token = logits[-1][:, -1].argmax(-1)
            tokens.append(token)
            logits.append(stepper.decode(token).logits)
    return torch.cat(logits, dim=1), torch.stack(tokens, dim=1)


@pytest.fixture(scope="module")
def processing(tiny_checkpoint):
    from trt_pipeline.models.glm4v.processing import Glm4vProcessing

    return Glm4vProcessing(tiny_checkpoint)


@pytest.mark.parametrize("chunk_size", [None, 3])
@pytest.mark.parametrize("case", sorted(PROMPTS))
def test_inplace_export_matches_the_concat_export(tiny_inplace_export, tiny_fused_export, processing, case, chunk_size):
    concat_logits, concat_tokens = greedy(tiny_fused_export, PROMPTS[case], processing, chunk_size)
    for io_binding in (True, False):
        logits, tokens = greedy(tiny_inplace_export, PROMPTS[case], processing, chunk_size, io_binding)
        assert torch.equal(tokens, concat_tokens)
        assert float((logits - concat_logits).abs().max()) <= 1e-5
        cosine = torch.nn.functional.cosine_similarity(logits.flatten(), concat_logits.flatten(), dim=0)
        assert float(cosine) > 0.999999


def test_torch_modules_of_the_inplace_decoder_match_the_export(tiny_checkpoint, tiny_inplace_export, processing):
    """The module that was traced, run by the torch runner, gives the export's logits (the stepper feeds both alike)."""
    from trt_pipeline.models.glm4v.model import Glm4vExportModel
    from trt_pipeline.runtime.torch_runner import torch_component_runners

    model = Glm4vExportModel.from_pretrained(tiny_checkpoint, dtype="float32")
    model.decoder.use_ops("fused").use_kv_cache("inplace")
    runner = torch_component_runners(model)[1]
    prompts = PROMPTS["padded-batch"]
    with runner:
        stepper = DecoderStepper(HostAssets.from_model(model), runner, chunk_size=4)
        assert stepper.arena is not None
        logits = [stepper.prefill_prompt(processing(prompts, [[] for _ in prompts])).logits]
        for _ in range(DECODE_STEPS):
            logits.append(stepper.decode(logits[-1][:, -1].argmax(-1)).logits)
    exported, _ = greedy(tiny_inplace_export, prompts, processing, chunk_size=4)
    assert float((torch.cat(logits, dim=1) - exported).abs().max()) <= 1e-5


def pooled_bytes_after_decoding(export_dir) -> tuple[int, int]:
    """(bytes the bound runner's output pool holds, bytes of the stepper's cache) after a prompt + decode steps."""
    runner = decoder_runner(export_dir)
    with runner:
        stepper = DecoderStepper(HostAssets.from_export_dir(export_dir), runner)
        token = stepper.prefill_tokens(torch.arange(5, 17).view(1, -1)).logits[:, -1].argmax(-1)
        for _ in range(DECODE_STEPS):
            token = stepper.decode(token).logits[:, -1].argmax(-1)
        return (sum(b.nbytes for buffers in runner.pool._buffers.values() for b in buffers),
                sum(a.nbytes for a in stepper.state.past.values()))


def test_inplace_holds_one_cache_where_concat_holds_two(tiny_inplace_export, tiny_fused_export):
    inplace_pool, cache = pooled_bytes_after_decoding(tiny_inplace_export)
    concat_pool, concat_cache = pooled_bytes_after_decoding(tiny_fused_export)
    assert concat_cache == cache
    # concat: the pool cycles two slabs that each hold a whole cache; inplace: logits only
    assert concat_pool >= inplace_pool + 2 * cache


def test_bound_runner_writes_the_new_rows_into_the_fed_buffer(tiny_inplace_export):
    assets = HostAssets.from_export_dir(tiny_inplace_export)
    runner = decoder_runner(tiny_inplace_export)
    with runner:
        stepper = DecoderStepper(assets, runner)
        out = stepper.prefill_tokens(torch.arange(5, 17).view(1, -1))
        buffer = stepper.arena.buffers["past_key_values.0.key"]
        before = buffer[:, :12].copy()
        token = out.logits[:, -1].argmax(-1)
        for step in range(DECODE_STEPS):
            out = stepper.decode(token)
            token = out.logits[:, -1].argmax(-1)
            for name, array in out.outputs.items():
                if name.startswith("present."):
                    source = name.replace("present.", "past_key_values.")
                    assert array is out.feed[source]  # the output is the fed array, written in place
                    assert array.base is stepper.arena.buffers[source]
        assert stepper.arena.buffers["past_key_values.0.key"] is buffer  # no new buffer in 10 steps
        assert np.array_equal(buffer[:, :12], before)  # earlier rows untouched
        assert stepper.past_length == 12 + DECODE_STEPS


def test_saved_states_never_change_behind_their_owner(tiny_inplace_export):
    """save -> decode -> load the older state -> decode other tokens: the later saved state is intact."""
    assets = HostAssets.from_export_dir(tiny_inplace_export)
    runner = decoder_runner(tiny_inplace_export)
    with runner:
        stepper = DecoderStepper(assets, runner)
        stepper.prefill_tokens(torch.arange(3, 13).view(1, -1))
        first = stepper.save()
        for token in (20, 21, 22, 23):
            stepper.decode(torch.tensor([token]))
        second = stepper.save()
        snapshot = {name: array.copy() for name, array in second.past.items()}
        expected = stepper.decode(torch.tensor([24])).logits
        stepper.load(first)  # shorter than what the arena handed out: copy-on-write
        for token in (30, 31, 32, 33, 34, 35):
            stepper.decode(torch.tensor([token]))
        for name, array in second.past.items():
            assert np.array_equal(array, snapshot[name]), name
        stepper.load(second)
        again = stepper.decode(torch.tensor([24])).logits
        assert torch.equal(again, expected)
        stepper.truncate(12, torch.tensor([12]))  # back inside the handed-out rows: copy-on-write again
        assert float((stepper.decode(torch.tensor([22])).logits - stepper_logits_after(assets, runner)).abs().max()) == 0.0


def stepper_logits_after(assets, runner) -> torch.Tensor:
    """Logits of token 22 after the prompt 3..12 and decode 20, 21, on a fresh stepper."""
    fresh = DecoderStepper(assets, runner)
    fresh.prefill_tokens(torch.arange(3, 13).view(1, -1))
    for token in (20, 21):
        fresh.decode(torch.tensor([token]))
    return fresh.decode(torch.tensor([22])).logits


def test_the_graph_updates_each_cache_tensor_with_one_scatter(tiny_inplace_export, tiny_fused_export):
    manifest = read_export_manifest(tiny_inplace_export)
    assert manifest.kv_cache == "inplace" and manifest.decoder_ops == "fused"
    assert read_export_manifest(tiny_fused_export).kv_cache == "concat"
    record = json.loads((tiny_inplace_export / "export.json").read_text())["decoder_graph"]
    assert record["kv_cache"] == "inplace" and "ScatterElements" in record["kv_cache_update"]
    model = onnx.load(str(onnx_path(tiny_inplace_export, "fp32", "decoder")), load_external_data=False)
    ops = Counter(node.op_type for node in model.graph.node)
    layers = manifest.checkpoint_dims["text"]["num_hidden_layers"]
    assert ops["ScatterElements"] == 2 * layers and ops["Attention"] == layers
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in (*model.graph.input, *model.graph.output)}
    width = manifest.checkpoint_dims["text"]["num_key_value_heads"] * 32  # tiny head_dim
    assert dims["past_key_values.0.key"] == ["batch_size", "total_sequence_length", width]
    assert dims["present.0.key"] == dims["past_key_values.0.key"]


def test_inplace_needs_the_fused_ops(tiny_checkpoint, tmp_path):
    with pytest.raises(ConfigError, match="--decoder-ops fused"):
        ExportConfig(kv_cache="inplace")
    with pytest.raises(ConfigError, match="--kv-cache must be one of"):
        ExportConfig(decoder_ops="fused", kv_cache="ring")
    from typer.testing import CliRunner

    from trt_pipeline.cli.app import app

    result = CliRunner().invoke(app, ["export", str(tiny_checkpoint), "--out", str(tmp_path / "x"), "--kv-cache", "inplace"])
    assert result.exit_code != 0 and "--decoder-ops fused" in result.output
    assert not (tmp_path / "x").exists()


def test_arena_copies_on_write_and_extends_batches_exactly():
    layout = KvLayout("inplace", 2, 4)
    arena = KvArena(layout)
    past = {"k": np.arange(1 * 3 * 8, dtype=np.float32).reshape(1, 3, 8)}
    fed = arena.feed(past, 2)
    assert fed["k"].shape == (1, 5, 8) and fed["k"].base is arena.buffers["k"] and fed["k"].flags.c_contiguous
    assert np.array_equal(fed["k"][:, :3], past["k"])
    buffer = arena.buffers["k"]
    fed["k"][:, 3:] = -1.0  # the run wrote the new rows
    again = arena.feed({"k": fed["k"]}, 1)  # continues the latest state: same buffer
    assert arena.buffers["k"] is buffer and again["k"].shape == (1, 6, 8)
    kept = again  # someone still holds the 6-row view: a shorter start must not write into its rows
    older = arena.feed({"k": fed["k"][:, :4]}, 1)
    assert arena.buffers["k"] is not buffer and np.array_equal(older["k"][:, :4], fed["k"][:, :4])
    assert np.array_equal(kept["k"][:, 4:5], -np.ones((1, 1, 8), np.float32))
    # rewinding when nothing else holds a view (only the state's own) stays in place
    state = older["k"][:, :3]
    del older, kept, again, fed, buffer
    rewound = arena.feed({"k": state}, 1)
    assert rewound["k"].base is state.base is arena.buffers["k"]
    offset = arena.feed({"k": arena.buffers["k"][:, 1:4]}, 1)  # a view of the buffer not starting at row 0
    assert offset["k"].base is not state.base and np.array_equal(offset["k"][:, :3], rewound["k"][:, 1:4])
    batch = {"k": np.ones((2, 3, 8), np.float32)}
    extended = arena.feed(batch, 1)["k"]
    assert extended.shape == (2, 4, 8) and extended.flags.c_contiguous and np.array_equal(extended[:, :3], batch["k"])
    with pytest.raises(ValueError):
        KvArena(KvLayout("concat", 2, 4))
    with pytest.raises(ValueError, match="cache of another layout"):
        arena.feed({"k": np.zeros((1, 2, 3, 4), np.float32)}, 1)


def test_adopt_takes_over_a_buffer_only_the_loaded_state_reads():
    """A saved state left on a buffer the arena no longer uses (it copied for another reader once) is
    loaded again and again (the bench's rewind, a prefix-cache entry): its buffer becomes the arena's
    instead of a copy per load, unless anything else still reads that buffer."""
    arena = KvArena(KvLayout("inplace", 2, 4))
    owned = np.zeros((1, 10, 8), np.float32)
    owned[:, :3] = 1.0
    state = {"k": owned[:, :3]}
    address = owned.ctypes.data
    del owned  # only the state's view reads the buffer now
    adopted = arena.adopt(state)["k"]
    assert arena.buffers["k"].ctypes.data == address and adopted.base is arena.buffers["k"]
    assert arena.feed({"k": adopted}, 1)["k"].base is arena.buffers["k"]  # and the step writes in place
    other = np.zeros((1, 10, 8), np.float32)
    longer = other[:, :5]  # another reader of rows past the state's
    shared = {"k": other[:, :3]}
    assert arena.adopt(shared)["k"] is shared["k"] and arena.buffers["k"].ctypes.data == address
    assert arena.feed(shared, 1)["k"].base is not other and longer.base is other  # copied, `longer` untouched
    # buffers of different capacities are never taken over together (the arena's share one capacity)
    mixed = {"k": np.zeros((1, 10, 8), np.float32)[:, :3], "v": np.zeros((1, 6, 8), np.float32)[:, :3]}
    assert all(arena.adopt(mixed)[name] is mixed[name] for name in mixed)


def test_layout_converts_to_and_from_transformers_heads():
    layout = KvLayout("inplace", 2, 4)
    heads = np.random.default_rng(0).standard_normal((3, 2, 5, 4)).astype(np.float32)
    mine = layout.from_heads(heads)
    assert mine.shape == (3, 5, 8) and mine.flags.c_contiguous
    assert np.array_equal(layout.to_heads(mine), heads)
    assert torch.equal(layout.to_heads(layout.from_heads(torch.from_numpy(heads))), torch.from_numpy(heads))
    assert layout.rows(mine, 1, 3).shape == (3, 2, 8) and KvLayout("concat", 2, 4).rows(heads, 1, 3).shape == (3, 2, 2, 4)


def test_rewind_and_redecode_stays_in_place(tiny_inplace_export):
    """The bench's timed step (save a filled cache, decode, load it back, decode again) copies no cache."""
    assets = HostAssets.from_export_dir(tiny_inplace_export)
    runner = decoder_runner(tiny_inplace_export)
    with runner:
        stepper = DecoderStepper(assets, runner)
        stepper.prefill_tokens(torch.arange(3, 40).view(1, -1))
        filled = stepper.save()
        buffer_id = id(stepper.arena.buffers["past_key_values.0.key"])
        first = stepper.decode(torch.tensor([7])).logits
        for _ in range(5):
            stepper.load(filled)
            # settled at load: the state is what the arena handed out last, so the step takes the identity path
            assert all(stepper.state.past[name] is view for name, view in stepper.arena.handed.items())
            assert torch.equal(stepper.decode(torch.tensor([7])).logits, first)
            assert id(stepper.arena.buffers["past_key_values.0.key"]) == buffer_id


def test_adopt_keeps_own_rows_in_place_and_copies_when_a_longer_view_is_held():
    arena = KvArena(KvLayout("inplace", 2, 4))
    fed = arena.feed({"k": np.arange(24, dtype=np.float32).reshape(1, 3, 8)}, 2)["k"]
    buffer = arena.buffers["k"]
    fed[:, 3:] = -1.0
    state = fed[:, :3].copy()  # rows made elsewhere (not a view of the arena): left for the next feed to copy
    assert arena.adopt({"k": state})["k"] is state and arena.handed["k"] is fed
    prefix = fed[:, :4]  # a shorter start inside the buffer while the 5-row view is still held: copied now
    adopted = arena.adopt({"k": prefix})["k"]
    assert adopted.base is arena.buffers["k"] is not buffer and np.array_equal(adopted, prefix)
    assert np.array_equal(fed[:, 4], -np.ones((1, 8), np.float32))
    assert arena.feed({"k": adopted}, 1)["k"].base is arena.buffers["k"]  # the step continues the adopted state
    mine = id(arena.buffers["k"])
    del fed, prefix, buffer, adopted  # every view of the buffer but the arena's own is gone
    shorter = arena.adopt({"k": arena.buffers["k"][:, :2]})["k"]  # nobody else reads this buffer: kept in place
    assert id(shorter.base) == mine and arena.handed["k"] is shorter and arena.high == 2
    assert arena.adopt({"k": np.ones((2, 3, 8), np.float32)})["k"].shape == (2, 3, 8)  # batches: as they are


def test_bf16_and_streamed_inplace_exports_validate(tiny_checkpoint, tmp_path, monkeypatch):
    """bf16 (validated through the torch modules: their feeds must take the inplace layout) and a streamed
    export validated on its twin, named by a relative path (the twin's structural check once failed on that)."""
    from trt_pipeline.export.exporter import export
    from trt_pipeline.export.twin_validate import validate_export

    bf16 = export(tiny_checkpoint, tmp_path / "bf16", ExportConfig(max_seq=32, max_kv=48, max_image_tokens=64, dtype="bfloat16",
                                                                   decoder_ops="fused", kv_cache="inplace"), show_progress=False)
    from trt_pipeline.artifacts import OutputLayout

    report = json.loads(OutputLayout(bf16).validation_report_for("bf16").read_text())
    assert report["passed"] and read_export_manifest(bf16).kv_cache == "inplace"
    export(tiny_checkpoint, tmp_path / "streamed", ExportConfig(max_seq=32, max_kv=48, max_image_tokens=64, streaming=True,
                                                                decoder_ops="fused", kv_cache="inplace", validate=False),
           show_progress=False)
    monkeypatch.chdir(tmp_path)
    twin = validate_export("streamed", mode="twin", show_progress=False)
    assert twin.mode == "twin" and twin.passed
    worst = max(result.max_abs for result in twin.results if result.component == "decoder" and result.output == "logits")
    assert worst <= 1e-4


def test_a_past_that_cannot_be_written_in_place_runs_unaliased(tiny_inplace_export):
    """A fed cache array ONNX Runtime cannot write in place (not C-contiguous): the bound runner's general
    path runs it without aliasing and gives the same numbers."""
    assets = HostAssets.from_export_dir(tiny_inplace_export)
    runner = decoder_runner(tiny_inplace_export)
    with runner:
        stepper = DecoderStepper(assets, runner)
        stepper.prefill_tokens(torch.arange(3, 20).view(1, -1))
        feed, _ = stepper.prepare_decode(torch.tensor([7]))
        expected = {name: np.array(value) for name, value in runner.infer(dict(feed), check_inputs=False).items()}
        odd = dict(feed, **{"past_key_values.0.key": np.asfortranarray(feed["past_key_values.0.key"])})
        assert not odd["past_key_values.0.key"].flags.c_contiguous
        out = runner.infer(odd, check_inputs=False)
        assert out["present.0.key"] is not odd["past_key_values.0.key"]
        assert out["present.1.key"] is not odd["past_key_values.1.key"]  # the whole run took the general path
        for name, value in expected.items():
            assert np.array_equal(out[name], value), name
