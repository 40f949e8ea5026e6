"""An ``inplace`` cache fed in blocks: longer than its attended rows, bound once per block.

The inplace decoder finds its write position from ``attention_mask`` (the rows up to the last
attended position), so the cache it is fed may run further: free rows, masked. A stepper with the
export's contract (``decoder_graph.kv_cache_free_rows``) over a runner that writes in place feeds
its :class:`~trt_pipeline.models.glm4v.kv_arena.KvArena` as views that grow by ``KV_BLOCK`` rows,
the same array objects for a whole block, and ``BoundOrtRunner`` binds each of them once per block.
Checked here: the numbers equal those of exact feeds (logits and greedy tokens over decode steps
that cross block boundaries, chunked prefill, truncation over stale rows, garbage in free rows),
the cache is bound once per block (and not again after the bench's rewind), and exports or runners
that do not qualify keep exact feeds.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from trt_pipeline.artifacts import read_export_manifest
from trt_pipeline.artifacts.manifests import parse_export_manifest
from trt_pipeline.models.glm4v.contract import ExportContract
from trt_pipeline.models.glm4v.generation import HostAssets
from trt_pipeline.models.glm4v.io_spec import KvLayout
from trt_pipeline.models.glm4v.kv_arena import KV_BLOCK, KvArena
from trt_pipeline.models.glm4v.stepper import DecoderStepper

from stepping import contract_of, decoder_runner, greedy

PROMPT = torch.arange(5, 17).view(1, -1)  # 12 tokens: 60 decode steps cross several KV_BLOCK boundaries
DECODE_STEPS = 60


class CountingOrtValues:
    """Stands in for the runner's OrtValue factory: counts the cache arrays it binds."""

    def __init__(self, make) -> None:
        self.make, self.calls = make, 0

    def __call__(self, value, device):
        self.calls += 1
        return self.make(value, device)


def test_the_inplace_export_declares_free_rows(tiny_inplace_export, tiny_fused_export):
    manifest = read_export_manifest(tiny_inplace_export)
    assert manifest.kv_free_rows and manifest.raw["decoder_graph"]["kv_cache_free_rows"] is True
    contract = ExportContract.from_manifest(manifest)
    assert contract.kv_free_rows and contract.max_total == manifest.dims["total_sequence_length"].max
    assert not read_export_manifest(tiny_fused_export).kv_free_rows  # concat: nothing to say
    # an inplace export from before the free rows (its graph wrote at T - S): fed exactly, as it was made for
    raw = json.loads((tiny_inplace_export / "export.json").read_text())
    del raw["decoder_graph"]["kv_cache_free_rows"]
    older = parse_export_manifest(raw, tiny_inplace_export / "export.json")
    assert older.kv_cache == "inplace" and not older.kv_free_rows
    with decoder_runner(tiny_inplace_export) as runner:
        stepper = DecoderStepper(HostAssets.from_export_dir(tiny_inplace_export), runner,
                                 contract=ExportContract.from_manifest(older))
        assert stepper.arena.block is None


def test_blocks_only_where_the_graph_and_the_runner_take_them(tiny_inplace_export):
    assets = HostAssets.from_export_dir(tiny_inplace_export)
    contract = contract_of(tiny_inplace_export)
    with decoder_runner(tiny_inplace_export) as runner:
        assert runner.binds_in_place
        assert DecoderStepper(assets, runner, contract=contract).arena.block == KV_BLOCK
        assert DecoderStepper(assets, runner).arena.block is None  # no contract: nothing says the graph takes them
    with decoder_runner(tiny_inplace_export, io_binding=False) as plain:  # copies its outputs: free rows would cost
        assert DecoderStepper(assets, plain, contract=contract).arena.block is None


@pytest.mark.parametrize("chunk_size", [None, 5])
def test_block_feeds_give_the_numbers_of_exact_feeds(tiny_inplace_export, chunk_size):
    assets = HostAssets.from_export_dir(tiny_inplace_export)
    with decoder_runner(tiny_inplace_export) as runner:
        exact_logits, exact_tokens = greedy(DecoderStepper(assets, runner), PROMPT, DECODE_STEPS, chunk_size)
        stepper = DecoderStepper(assets, runner, contract=contract_of(tiny_inplace_export))
        logits, tokens = greedy(stepper, PROMPT, DECODE_STEPS, chunk_size)
        step = stepper.decode(torch.tensor([9]))  # the next one, looked at
        fed = step.feed["past_key_values.0.key"]
        length = PROMPT.shape[1] + DECODE_STEPS + 1
        rows = -(-length // KV_BLOCK) * KV_BLOCK
        assert rows > length  # (73 rows: not a whole block)
        assert fed.shape[1] == rows and stepper.past_length == length  # a longer view; the state is exact
        assert stepper.state.past["past_key_values.0.key"].shape[1] == length
        mask = step.feed["attention_mask"]
        assert mask.shape == (1, rows) and mask[0, :length].all() and not mask[0, length:].any()
        assert tuple(stepper.state.attention_mask.shape) == (1, length)
    assert tokens == exact_tokens
    assert float((logits - exact_logits).abs().max()) <= 1e-5
    assert float(torch.nn.functional.cosine_similarity(logits.flatten(), exact_logits.flatten(), dim=0)) > 0.999999


def test_the_cache_is_bound_once_per_block(tiny_inplace_export):
    assets = HostAssets.from_export_dir(tiny_inplace_export)
    layers = read_export_manifest(tiny_inplace_export).checkpoint_dims["text"]["num_hidden_layers"]
    with decoder_runner(tiny_inplace_export) as runner:
        counter = runner._ortvalue = CountingOrtValues(runner._ortvalue)
        stepper = DecoderStepper(assets, runner, contract=contract_of(tiny_inplace_export))
        token = stepper.prefill_tokens(PROMPT).logits[:, -1].argmax(-1)  # 12 rows: the first block
        assert counter.calls == 2 * layers
        binds = []
        for _ in range(DECODE_STEPS):  # rows 13 .. 72
            out = stepper.decode(token)
            token = out.logits[:, -1].argmax(-1)
            binds.append(counter.calls)
            assert out.outputs["present.0.key"] is out.feed["past_key_values.0.key"]  # still written in place
        prompt = PROMPT.shape[1]
        blocks = [-(-rows // KV_BLOCK) for rows in range(prompt, prompt + DECODE_STEPS + 1)]
        assert counter.calls == 2 * layers * len(set(blocks))  # once per block, not per step
        # rebound exactly at the steps whose rows start a new block
        assert [step for step in range(DECODE_STEPS) if blocks[step + 1] != blocks[step]] == \
            [step for step in range(DECODE_STEPS) if binds[step] != (binds[step - 1] if step else 2 * layers)]
        # the bench's rewind: load a filled state, decode, again and again: nothing is bound again
        filled = stepper.save()
        first = stepper.decode(torch.tensor([7])).logits
        calls = counter.calls
        for _ in range(4):
            stepper.load(filled)
            assert torch.equal(stepper.decode(torch.tensor([7])).logits, first)
        assert counter.calls == calls


def test_truncating_over_written_rows_and_garbage_in_free_rows(tiny_inplace_export):
    """Free rows hold what earlier steps wrote (after a truncate) or anything finite: masked, they change nothing."""
    assets = HostAssets.from_export_dir(tiny_inplace_export)
    contract = contract_of(tiny_inplace_export)
    with decoder_runner(tiny_inplace_export) as runner:
        stepper = DecoderStepper(assets, runner, contract=contract)
        stepper.prefill_tokens(PROMPT)
        for token in (20, 21, 22, 23, 24):
            stepper.decode(torch.tensor([token]))
        stepper.truncate(14, torch.tensor([14]))  # rows 14..16 keep the old tokens' keys/values, now free
        after_truncate = [stepper.decode(torch.tensor([token])).logits for token in (30, 31)]
        fresh = DecoderStepper(assets, runner)  # exact feeds
        fresh.prefill_tokens(PROMPT)
        for token in (20, 21):
            fresh.decode(torch.tensor([token]))
        expected = [fresh.decode(torch.tensor([token])).logits for token in (30, 31)]
        for got, want in zip(after_truncate, expected):
            assert float((got - want).abs().max()) <= 1e-5
        # the graph itself: random finite rows after the attended ones
        feed, _ = stepper.prepare_decode(torch.tensor([40]))
        feed = {name: np.array(value) for name, value in feed.items()}
        length = stepper.past_length + 1
        rng = np.random.default_rng(0)
        for name, value in feed.items():
            if name.startswith("past_key_values."):
                value[:, length:] = rng.standard_normal(value[:, length:].shape).astype(value.dtype) * 100
        assert feed["past_key_values.0.key"].shape[1] > length
        garbage = runner.infer(feed, check_inputs=False)["logits"].copy()
        exact = {name: value[:, :length] if value.ndim >= 2 and value.shape[1] > length and name != "inputs_embeds"
                 else value for name, value in feed.items()}
        exact = {name: np.ascontiguousarray(value) for name, value in exact.items()}
        assert exact["attention_mask"].shape == (1, length)
        reference = runner.infer(exact, check_inputs=False)["logits"]
        assert float(np.abs(garbage - reference).max()) <= 1e-5


def test_the_traced_module_takes_free_rows(tiny_checkpoint):
    """What is traced: TextDecoder with an inplace cache fed [B, T + free, W], mask 0 on the free rows."""
    from trt_pipeline.models.glm4v.model import Glm4vExportModel

    model = Glm4vExportModel.from_pretrained(tiny_checkpoint, dtype="float32")
    decoder = model.decoder.use_graph("fused", "inplace")
    text = model.dims.text
    layout = KvLayout.of(model.dims, "inplace")
    generator = torch.Generator().manual_seed(0)
    for past, new, free in ((0, 7, 5), (9, 1, 54), (9, 4, 1)):
        embeds = torch.randn(1, new, text.hidden_size, generator=generator)
        cos, sin = torch.randn(2, 1, new, text.rotary_dim, generator=generator)
        caches = [torch.randn(*layout.shape(1, past + new + free), generator=generator)
                  for _ in range(2 * text.num_hidden_layers)]
        mask = torch.ones(1, past + new, dtype=torch.long)
        positions = torch.arange(new)
        with torch.no_grad():
            exact = decoder(embeds, mask, cos, sin, positions, *[c[:, :past + new].clone() for c in caches])
            padded = decoder(embeds, torch.nn.functional.pad(mask, (0, free)), cos, sin, positions,
                             *[c.clone() for c in caches])
        assert float((exact[0] - padded[0]).abs().max()) <= 1e-5
        for written, full in zip(exact[1:], padded[1:]):  # the new rows land at past .. past + new - 1
            assert float((written - full[:, :past + new]).abs().max()) <= 1e-5


def test_arena_block_views():
    layout = KvLayout("inplace", 2, 4)
    arena = KvArena(layout, block=8, max_rows=20)
    past = {"k": np.arange(1 * 3 * 8, dtype=np.float32).reshape(1, 3, 8)}
    fed = arena.feed(past, 2)["k"]
    assert fed.shape == (1, 8, 8) and fed.base is arena.buffers["k"] and fed.flags.c_contiguous
    assert arena.handed["k"].shape == (1, 5, 8) and arena.capacity % 8 == 0
    assert not fed[:, 3:].any()  # new buffers are zero: free rows are read (masked), never uninitialised
    state = arena.handed
    again = arena.feed(state, 1)
    assert again["k"] is fed  # the same objects while the block lasts: a bound runner keeps its binding
    for _ in range(4):
        again = arena.feed(arena.handed, 1)
    assert again["k"].shape == (1, 16, 8) and again["k"] is not fed  # 10 rows: the next block
    capped = arena.feed({"k": np.zeros((1, 18, 8), np.float32)}, 1)["k"]
    assert capped.shape == (1, 20, 8)  # max_rows: what the graph's profile takes
    with pytest.raises(ValueError, match="block"):
        KvArena(layout, block=0)


def test_block_views_do_not_hide_a_saved_state_from_copy_on_write():
    """The arena's own block view is not a reader; a saved state is: a shorter start copies while it is held."""
    arena = KvArena(KvLayout("inplace", 2, 4), block=8, max_rows=64)
    arena.feed({"k": np.ones((1, 3, 8), np.float32)}, 2)
    arena.bound["k"][:, 3:5] = 2.0  # the run wrote the new rows
    saved = dict(arena.handed)  # 5 rows, held
    buffer = arena.buffers["k"]
    arena.feed({"k": saved["k"][:, :3]}, 1)  # back to 3 rows: row 3 would be written under the saved state
    assert arena.buffers["k"] is not buffer and np.array_equal(saved["k"][:, 3:5], 2 * np.ones((1, 2, 8), np.float32))
    mine = id(arena.buffers["k"])  # (an id: a name bound to the buffer would be one more reader)
    shorter = {"k": arena.handed["k"][:, :2]}
    arena.feed(shorter, 1)  # nobody but this state and the arena's block view reads the buffer: in place
    assert id(arena.buffers["k"]) == mine


def test_a_kept_binding_reads_what_the_arrays_hold_now(tiny_inplace_export):
    """The runner keeps an in-place binding while the same arrays are fed: it must read their current
    rows (not a copy made at bind time), and any other array gets bound anew."""
    assets = HostAssets.from_export_dir(tiny_inplace_export)
    with decoder_runner(tiny_inplace_export) as runner:
        stepper = DecoderStepper(assets, runner, contract=contract_of(tiny_inplace_export))
        stepper.prefill_tokens(PROMPT)
        feed, _ = stepper.prepare_decode(torch.tensor([7]))
        feed = {name: np.array(value) for name, value in feed.items()}  # arrays the runner has not bound yet
        counter = runner._ortvalue = CountingOrtValues(runner._ortvalue)
        first = runner.infer(feed, check_inputs=False)["logits"].copy()
        bound = counter.calls
        caches = [value for name, value in feed.items() if name.startswith("past_key_values.")]
        assert bound == len(caches)  # one OrtValue per in-place pair
        for value in caches:
            value[:, :PROMPT.shape[1]] *= 0.5  # the same objects, other rows
        kept = runner.infer(feed, check_inputs=False)["logits"].copy()
        assert counter.calls == bound  # nothing bound again
        copies = {name: np.array(value) for name, value in feed.items()}  # other objects, the same values
        rebound = runner.infer(copies, check_inputs=False)["logits"].copy()
        assert counter.calls == 2 * bound
        assert np.array_equal(kept, rebound)
        assert float(np.abs(first - kept).max()) > 1e-3  # halving the cache did change the step


def test_a_step_whose_last_position_nobody_attends_is_refused(tiny_inplace_export):
    """The inplace graph writes where the attended rows end: a right-padded step that attends no last
    position in any row would write elsewhere, so the feed builder refuses it."""
    assets = HostAssets.from_export_dir(tiny_inplace_export)
    with decoder_runner(tiny_inplace_export) as runner:
        stepper = DecoderStepper(assets, runner)
        with pytest.raises(ValueError, match="last new position attended"):
            stepper.prefill(stepper.builder.token_embeddings(PROMPT), torch.tensor([[1] * 11 + [0]]),
                            torch.arange(12).view(1, 1, -1).expand(3, 1, -1))
