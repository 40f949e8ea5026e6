"""``DecoderStepper.decode``'s fast path against the general ``prepare_decode`` + ``step`` path.

The fast path builds a decode step's feed from tables (embedding rows, M-RoPE rows of
``host.text_rope_table``) and one mask copy instead of the general torch round trips. It must be
invisible: the same feed (names, order, dtypes, bits), the same logits and the same cache after
every step, over the torch-module runner, ONNX Runtime with IO binding and plain ONNX Runtime,
for one row and for a left-padded batch of two, and after ``save``/``load``/``truncate``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest
import torch

from trt_pipeline.models.glm4v.generation import HostAssets
from trt_pipeline.models.glm4v.stepper import CacheState, DecoderStepper, FeedBuilder

STEPS = 6
PROMPTS = {
    "one-row": ["Open Settings and turn on Wi-Fi"],
    "padded-batch": ["Open Settings", "打开微信给张三发消息说我晚点到，然后返回桌面"],
}


@pytest.fixture(scope="module")
def processing(tiny_checkpoint):
    from trt_pipeline.models.glm4v.processing import Glm4vProcessing

    return Glm4vProcessing(tiny_checkpoint)


@pytest.fixture(scope="module", params=["torch", "ort-bound", "ort-plain"])
def backend(request, tiny_checkpoint, compare_export):
    """(assets, decoder runner), active for the module."""
    if request.param == "torch":
        from trt_pipeline.models.glm4v.model import Glm4vExportModel
        from trt_pipeline.runtime.torch_runner import torch_component_runners

        model = Glm4vExportModel.from_pretrained(tiny_checkpoint, dtype="float32")
        assets, decoder = HostAssets.from_model(model), torch_component_runners(model)[1]
    else:
        from trt_pipeline.runtime.onnxruntime_runner import OrtSettings, onnx_path, ort_runner

        settings = OrtSettings(intra_op_threads=1, io_binding=request.param == "ort-bound")
        assets = HostAssets.from_export_dir(compare_export)
        decoder = ort_runner(onnx_path(compare_export, "fp32", "decoder"), settings=settings)
    decoder.activate()
    yield assets, decoder
    decoder.deactivate()


def assert_same_feed(fast: Mapping[str, np.ndarray], general: Mapping[str, np.ndarray]) -> None:
    assert list(fast) == list(general)
    for name, value in general.items():
        other = np.asarray(fast[name])
        assert other.dtype == value.dtype and other.shape == value.shape, name
        assert np.array_equal(other, value), name


def assert_same_state(fast: CacheState, general: CacheState) -> None:
    assert list(fast.past) == list(general.past)
    for name, value in general.past.items():
        assert fast.past[name].dtype == value.dtype and np.array_equal(fast.past[name], value), name
    assert torch.equal(fast.attention_mask, general.attention_mask)
    assert torch.equal(fast.next_position, general.next_position)
    assert fast.attention_mask.dtype == general.attention_mask.dtype == torch.long


def general_decode(stepper: DecoderStepper, tokens: torch.Tensor):
    feed, positions = stepper.prepare_decode(tokens)
    return stepper.step(feed, positions)


@pytest.mark.parametrize("case", sorted(PROMPTS))
def test_fast_decode_equals_the_general_step(backend, processing, case):
    assets, decoder = backend
    inputs = processing(PROMPTS[case], [[] for _ in PROMPTS[case]])
    if case == "padded-batch":
        assert (inputs.attention_mask == 0).any()  # the left padding this case is about
    fast, general = DecoderStepper(assets, decoder), DecoderStepper(assets, decoder)
    first = fast.prefill_prompt(inputs)
    assert torch.equal(first.logits, general.prefill_prompt(inputs).logits)
    tokens = first.last_logits.argmax(-1)
    for _ in range(STEPS):
        expected_feed, _ = general.prepare_decode(tokens)
        expected = general_decode(general, tokens)
        got = fast.decode(tokens)
        assert_same_feed(got.feed, expected_feed)
        assert got.logits.dtype == torch.float32 and torch.equal(got.logits, expected.logits)
        assert_same_state(fast.save(), general.save())
        tokens = got.last_logits.argmax(-1)
    # a saved cache continues identically on both paths, and so does a truncated one
    saved = fast.save()
    fast.load(saved)
    general.load(saved)
    assert torch.equal(fast.decode(tokens).logits, general_decode(general, tokens).logits)
    length = saved.attention_mask.shape[1] - 2
    for stepper in (fast, general):
        stepper.truncate(length, saved.next_position - 2)
    assert torch.equal(fast.decode(tokens).logits, general_decode(general, tokens).logits)
    assert_same_state(fast.save(), general.save())
    # M-RoPE positions ahead of the cache length (an image advances them by less than its tokens)
    ahead = fast.save()
    ahead = CacheState(ahead.past, ahead.attention_mask, ahead.next_position + 37)
    fast.load(ahead)
    general.load(ahead)
    assert torch.equal(fast.decode(tokens).logits, general_decode(general, tokens).logits)
    assert_same_state(fast.save(), general.save())


@pytest.mark.parametrize("declared", ["runner", "float16", "none"])
def test_decode_feed_equals_decoder_feed(compare_export, declared):
    """The feed alone, for every way a builder casts: the runner's dtypes, an fp16-I/O graph, none;
    at positions past the first table size (the M-RoPE table grows) and on a non-contiguous mask."""
    assets = HostAssets.from_export_dir(compare_export)
    builder = FeedBuilder(assets, None)
    if declared != "none":
        from trt_pipeline.runtime.onnxruntime_runner import onnx_path, ort_runner
        from trt_pipeline.models.glm4v.stepper import runner_inputs

        with ort_runner(onnx_path(compare_export, "fp32", "decoder")) as runner:
            dtypes = runner_inputs(runner)
        if declared == "float16":
            dtypes = {name: np.dtype(np.float16) if dtype.kind == "f" else dtype for name, dtype in dtypes.items()}
        builder = FeedBuilder(assets, dtypes)
    past = builder.empty_past(2)
    past = {name: builder.cast(name, np.random.default_rng(0).standard_normal((2, v.shape[1], 5, v.shape[3])))
            for name, v in past.items()}
    mask = torch.tensor([[0, 0, 1, 1, 1, 9], [1, 1, 1, 1, 1, 9]])[:, :5]  # a view, as truncate leaves
    tokens = torch.tensor([7, 3])
    for next_position in ([3, 5], [700, 2], [0, 4097]):
        positions = torch.tensor(next_position)
        general = builder.decoder_feed(builder.token_embeddings(tokens.view(2, 1)),
                                       torch.cat([mask, torch.ones(2, 1, dtype=torch.long)], dim=1),
                                       positions.view(1, 2, 1).expand(3, 2, 1), past)
        full = np.concatenate([mask.numpy(), np.ones((2, 1), np.int64)], axis=1)
        fast = builder.decode_feed(tokens.numpy(), positions.numpy(), full, past)
        assert_same_feed(fast, general)
    with pytest.raises(ValueError, match="positions"):
        builder.decode_feed(tokens.numpy(), np.array([-1, 2]), full, past)
