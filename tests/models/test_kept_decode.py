"""``KeptDecode`` (one kept binding per cache block) against the stepper's general decode path.

The lean path writes a decode step's token row, rotary rows and one mask column into arrays bound
once per block and runs. It must be invisible: bitwise the same feed, logits and next state as the
general path (block feeds, per-run binding) over decode steps that cross a block boundary, with
prefill chunks run through the same runner in between (the runner's binding changes hands), after
``load``/``truncate`` (the kept mask is written again), and it must decline what it does not serve
(a mask with padding), leaving it to the general path.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trt_pipeline.artifacts import read_export_manifest
from trt_pipeline.models.glm4v.contract import ExportContract
from trt_pipeline.models.glm4v.generation import HostAssets
from trt_pipeline.models.glm4v.stepper import CacheState, DecoderStepper
from trt_pipeline.runtime.onnxruntime_runner import OrtSettings, onnx_path, ort_runner

PROMPT = torch.arange(5, 17).view(1, -1)


@pytest.fixture(scope="module")
def runner(tiny_inplace_export):
    runner = ort_runner(onnx_path(tiny_inplace_export, "fp32", "decoder"), settings=OrtSettings(intra_op_threads=1))
    with runner:
        yield runner


@pytest.fixture(scope="module")
def make(tiny_inplace_export, runner):
    assets = HostAssets.from_export_dir(tiny_inplace_export)
    contract = ExportContract.from_manifest(read_export_manifest(tiny_inplace_export))

    def stepper(kept: bool) -> DecoderStepper:
        made = DecoderStepper(assets, runner, contract=contract)
        assert made.kept is not None and made.arena.block is not None
        if not kept:
            made.kept = None  # the general path, with the same block feeds
        return made

    return stepper


def snapshot(step) -> dict[str, np.ndarray]:
    """The step's feed as it was (the kept feed is written again by the next step)."""
    return {name: np.array(value) for name, value in step.feed.items()}


def assert_same_step(lean_feed, general_feed, lean_stepper, general_stepper) -> None:
    assert list(lean_feed) == list(general_feed)
    rows = general_stepper.past_length  # a fed cache's rows after these are free: what they hold is nobody's
    for name, value in general_feed.items():
        lean_value = lean_feed[name]
        assert lean_value.dtype == value.dtype and lean_value.shape == value.shape, name
        if name.startswith("past_key_values."):
            lean_value, value = lean_value[:, :rows], value[:, :rows]
        assert np.array_equal(lean_value, value), name
    lean_state, general_state = lean_stepper.state, general_stepper.state
    assert torch.equal(lean_state.attention_mask, general_state.attention_mask)
    assert torch.equal(lean_state.next_position, general_state.next_position)
    assert list(lean_state.past) == list(general_state.past)
    for name, value in general_state.past.items():
        assert np.array_equal(lean_state.past[name], value), name


def test_the_kept_path_is_the_general_path_bitwise(make):
    lean, general = make(kept=True), make(kept=False)
    tokens = {}
    for stepper in (lean, general):
        tokens[id(stepper)] = stepper.prefill_tokens(PROMPT).logits[:, -1].argmax(-1)
    for step in range(70):  # rows 13 .. 85: across several blocks
        if step == 30:  # a prefill chunk on the filled cache in between: the runner's binding changes hands
            for stepper in (lean, general):
                stepper.prefill_tokens(torch.tensor([[40, 41, 42]]))
        outs = [stepper.decode(tokens[id(stepper)]) for stepper in (lean, general)]
        assert torch.equal(outs[0].logits, outs[1].logits), step
        assert_same_step(snapshot(outs[0]), snapshot(outs[1]), lean, general)
        for stepper, out in zip((lean, general), outs):
            tokens[id(stepper)] = out.logits[:, -1].argmax(-1)
    assert lean.past_length == 12 + 3 + 70


def test_load_and_truncate_write_the_kept_mask_again(make):
    lean, general = make(kept=True), make(kept=False)
    for stepper in (lean, general):
        stepper.prefill_tokens(PROMPT)
        first = stepper.save()
        for token in (20, 21, 22):
            stepper.decode(torch.tensor([token]))
        stepper.load(first)  # shorter: the kept mask has ones past it
        stepper.decode(torch.tensor([30]))
        stepper.truncate(10, torch.tensor([10]))
    outs = [stepper.decode(torch.tensor([31])) for stepper in (lean, general)]
    assert torch.equal(outs[0].logits, outs[1].logits)
    assert_same_step(snapshot(outs[0]), snapshot(outs[1]), lean, general)
    assert int(outs[0].feed["attention_mask"].sum()) == 11


def test_a_mask_with_padding_is_left_to_the_general_path(make):
    lean, general = make(kept=True), make(kept=False)
    for stepper in (lean, general):
        stepper.prefill_tokens(PROMPT)
        state = stepper.save()
        padded = state.attention_mask.clone()
        padded[:, :2] = 0  # the first two rows are padding
        stepper.load(CacheState(state.past, padded, state.next_position))
    assert not lean.kept.prepare(lean.state, torch.tensor([7]))
    outs = [stepper.decode(torch.tensor([7])) for stepper in (lean, general)]
    assert torch.equal(outs[0].logits, outs[1].logits)
    assert lean.state.attention_mask[0, :2].sum() == 0


def test_a_kept_binding_rebinds_after_other_runs(runner, make):
    """KeptBinding.run after the runner ran another feed: bound again, the same numbers."""
    stepper = make(kept=False)
    stepper.prefill_tokens(PROMPT)
    feed, _ = stepper.prepare_decode(torch.tensor([7]))
    feed = {name: np.array(value) for name, value in feed.items()}
    kept = runner.keep(feed)
    rows = {name: value.copy() for name, value in feed.items() if name.startswith("past_key_values.")}
    first = kept.run()["logits"].copy()
    for name, value in rows.items():  # the run wrote row 12 in place: put the cache back
        feed[name][...] = value
    other = {name: np.array(value) for name, value in feed.items()}
    assert np.array_equal(runner.infer(other, check_inputs=False)["logits"], first)
    for name, value in rows.items():
        feed[name][...] = value
    out = kept.run()
    assert np.array_equal(out["logits"], first) and out is kept.outputs
    assert out["present.0.key"] is feed["past_key_values.0.key"]
    with pytest.raises(ValueError, match="C-contiguous"):
        runner.keep({**feed, "past_key_values.0.key": np.asfortranarray(feed["past_key_values.0.key"])}, check_inputs=False)
