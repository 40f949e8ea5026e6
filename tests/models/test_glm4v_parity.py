"""Parity of the export-friendly GLM-4.1V with transformers (fp32) on real tiny checkpoints.

Two configs x two seeds (see ``parity_checkpoint`` in conftest.py): other head / KV-head
counts, another mrope section, another vision position table. Inputs go through the
checkpoint's own tokenizer, chat template and image processor: a non-square image, two images
in one prompt, and a batch of two prompts of different lengths (left padding).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trt_pipeline.accuracy.gates import DEFAULT_GATES
from trt_pipeline.accuracy.metrics import cosine
from trt_pipeline.models.glm4v import host
from trt_pipeline.models.glm4v.decoder_ops import DECODER_OPS, default_kv_cache
from trt_pipeline.models.glm4v.io_spec import KvLayout
from trt_pipeline.models.glm4v.generation import HostAssets, greedy_generate, prefill_embeddings
from trt_pipeline.models.glm4v.model import Glm4vExportModel
from trt_pipeline.models.glm4v.processing import Glm4vProcessing
from trt_pipeline.runtime.torch_runner import torch_component_runners

VISION_ATOL = 1e-5
LOGITS_ATOL = 1e-4


def synthetic_image(width: int, height: int, seed: int):
    from PIL import Image

    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, width, dtype=np.float32)[None, :, None] * np.ones((height, 1, 3), np.float32)
    noise = rng.uniform(0, 80, size=(height, width, 3)).astype(np.float32)
    return Image.fromarray(np.clip(base * 0.7 + noise, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def pair(parity_checkpoint):
    from transformers import Glm4vForConditionalGeneration

    reference = Glm4vForConditionalGeneration.from_pretrained(str(parity_checkpoint), dtype=torch.float32).eval()
    ours = Glm4vExportModel.from_pretrained(parity_checkpoint, dtype="float32")
    return reference, ours, Glm4vProcessing(parity_checkpoint)


@pytest.mark.parametrize(
    "sizes",
    [[(112, 112)], [(252, 140)], [(84, 196), (168, 112)], [(84, 196), (168, 112), (140, 84)]],
    ids=["square", "non-square", "two-images", "three-images"],
)
def test_vision_features_match(pair, sizes):
    reference, ours, processing = pair
    images = [synthetic_image(w, h, seed=i) for i, (w, h) in enumerate(sizes)]
    pixels, grid = processing.process_images(images)
    with torch.no_grad():
        expected = reference.model.get_image_features(pixels, grid, return_dict=True).pooler_output
    expected = torch.cat(list(expected)) if isinstance(expected, (list, tuple)) else expected
    actual = ours.encode_images(pixels, grid)  # one encoder call per image, no mask input
    assert actual.shape == expected.shape
    assert (actual - expected).abs().max().item() <= VISION_ATOL
    assert cosine(expected.numpy(), actual.numpy()) >= DEFAULT_GATES["fp32"].image_features.cosine


def batch_inputs(processing):
    prompts = ["Open Settings and turn on Wi-Fi", "打开微信给张三发消息说我晚点到，然后返回桌面"]
    images = [[synthetic_image(252, 140, 1)], [synthetic_image(84, 196, 2), synthetic_image(112, 112, 3)]]
    return processing(prompts, images)


@pytest.fixture(params=DECODER_OPS)
def decoder_ops(request: pytest.FixtureRequest, pair):
    """Each decoder graph flavour (``--decoder-ops``, with its default cache) traces the same numbers: each is
    held to transformers (the onnxruntime flavour through its contrib ops' torch math)."""
    ours = pair[1]
    ours.decoder.use_graph(request.param, default_kv_cache(request.param))
    yield request.param
    ours.decoder.use_graph("portable")


def test_prefill_logits_match_on_padded_batch(pair, decoder_ops):
    reference, ours, processing = pair
    inputs = batch_inputs(processing)
    assert inputs.attention_mask[0].sum() != inputs.attention_mask[1].sum(), "rows must differ in length"
    with torch.no_grad():
        expected = reference(**inputs.hf_kwargs()).logits
        features = ours.encode_images(inputs.pixel_values, inputs.image_grid_thw)
        embeds = prefill_embeddings(HostAssets.from_model(ours), inputs, features)
        positions, _ = host.rope_index(
            inputs.input_ids, inputs.mm_token_type_ids, inputs.image_grid_thw, inputs.attention_mask, 2
        )
        cos, sin = host.text_rope(ours.dims.text, positions)
        every_position = torch.arange(inputs.input_ids.shape[1])
        layout = KvLayout.of(ours.dims, ours.decoder.kv_cache)  # a cache written in place spans the new rows
        past = ours.empty_past(2) if not layout.inplace else [
            torch.zeros(layout.shape(2, embeds.shape[1])) for _ in ours.empty_past(2)]
        actual = ours.decoder(embeds, inputs.attention_mask, cos, sin, every_position, *past)[0]
    valid = inputs.attention_mask.bool()
    assert (actual[valid] - expected[valid]).abs().max().item() <= LOGITS_ATOL


def test_sixteen_decode_steps_match_generate(pair, decoder_ops):
    reference, ours, processing = pair
    inputs = batch_inputs(processing)
    with torch.no_grad():
        hf = reference.generate(
            **inputs.hf_kwargs(), max_new_tokens=16, min_new_tokens=16, do_sample=False,
            output_logits=True, return_dict_in_generate=True, pad_token_id=processing.pad_token_id,
        )
    hf_tokens = hf.sequences[:, inputs.input_ids.shape[1]:]
    vision, decoder = torch_component_runners(ours)
    # min_new_tokens=16 suppresses EOS in transformers; generating without EOS ids does the same here.
    result = greedy_generate(HostAssets.from_model(ours), vision, decoder, inputs, 16,
                             eos_token_ids=(), pad_token_id=processing.pad_token_id, collect_logits=True)
    assert len(result.step_logits) == 16
    eos = set(processing.eos_token_ids)
    for step, (expected, actual) in enumerate(zip(hf.logits, result.step_logits)):
        expected = expected.clone()
        expected[:, list(eos)] = actual[:, list(eos)]  # transformers set EOS logits to -inf (min_new_tokens)
        assert (expected - actual).abs().max().item() <= LOGITS_ATOL, f"step {step}"
    assert torch.equal(result.tokens, hf_tokens)
