"""The feed builder and decoder stepper over the torch-module runner and ONNX Runtime, against transformers.

Each case goes through the tiny checkpoint's tokenizer, chat template and image processor: a
single text prompt, a left-padded batch with one and two images per row, and an image prompt.
The stepper must give transformers' prefill logits and greedy tokens, the same tokens when the
prompt is prefilled in chunks on a filled cache, and the same last-position logits whether it
asks the decoder for the last position only or for every position.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trt_pipeline.models.glm4v.generation import HostAssets, encode_images, greedy_generate
from trt_pipeline.models.glm4v.stepper import CacheState, DecoderStepper, FeedBuilder, logit_indices

LOGITS_ATOL = 1e-4
COSINE_MIN = 0.99999
CHUNK_ATOL = 1e-4  # chunked vs one-shot prefill: the same math in other matmul shapes
NEW_TOKENS = 12


def synthetic_image(width: int, height: int, seed: int):
    from PIL import Image

    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, width, dtype=np.float32)[None, :, None] * np.ones((height, 1, 3), np.float32)
    noise = rng.uniform(0, 80, size=(height, width, 3)).astype(np.float32)
    return Image.fromarray(np.clip(base * 0.7 + noise, 0, 255).astype(np.uint8))


CASES = {
    "single": (["Open Settings and turn on Wi-Fi"], [[]]),
    "padded-batch": (
        ["Open Settings and turn on Wi-Fi", "打开微信给张三发消息说我晚点到，然后返回桌面"],
        [[(252, 140)], [(84, 196), (112, 112)]],
    ),
    "image": (["What is on this screen?"], [[(112, 196)]]),
}


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().flatten(), b.double().flatten()
    return float(a @ b / (a.norm() * b.norm()))


@pytest.fixture(scope="module")
def reference(tiny_checkpoint):
    from transformers import Glm4vForConditionalGeneration

    return Glm4vForConditionalGeneration.from_pretrained(str(tiny_checkpoint), dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def processing(tiny_checkpoint):
    from trt_pipeline.models.glm4v.processing import Glm4vProcessing

    return Glm4vProcessing(tiny_checkpoint)


@pytest.fixture(scope="module", params=["torch", "ort"])
def backend(request, tiny_checkpoint, compare_export):
    """(assets, vision runner, decoder runner), active for the module."""
    if request.param == "torch":
        from trt_pipeline.models.glm4v.model import Glm4vExportModel
        from trt_pipeline.runtime.torch_runner import torch_component_runners

        model = Glm4vExportModel.from_pretrained(tiny_checkpoint, dtype="float32")
        assets, runners = HostAssets.from_model(model), torch_component_runners(model)
    else:
        from trt_pipeline.runtime.onnxruntime_runner import ort_component_runners

        assets, runners = HostAssets.from_export_dir(compare_export), ort_component_runners(compare_export)
    for runner in runners:
        runner.activate()
    yield assets, *runners
    for runner in runners:
        runner.deactivate()


def make_inputs(processing, case: str):
    prompts, sizes = CASES[case]
    images = [[synthetic_image(w, h, seed=i) for i, (w, h) in enumerate(row)] for row in sizes]
    return processing(prompts, images)


@pytest.mark.parametrize("case", sorted(CASES))
def test_prefill_logits_match_transformers(backend, reference, processing, case):
    assets, vision, decoder = backend
    inputs = make_inputs(processing, case)
    with torch.no_grad():
        expected = reference(**inputs.hf_kwargs()).logits
    stepper = DecoderStepper(assets, decoder)
    actual = stepper.prefill_prompt(inputs, encode_images(assets, vision, inputs), logits="all").logits
    assert actual.shape == expected.shape
    valid = inputs.attention_mask.bool()
    assert (actual[valid] - expected[valid]).abs().max().item() <= LOGITS_ATOL
    assert cosine(actual[valid], expected[valid]) >= COSINE_MIN
    assert stepper.past_length == inputs.input_ids.shape[1]


@pytest.mark.parametrize("case", sorted(CASES))
def test_greedy_tokens_match_generate(backend, reference, processing, case):
    assets, vision, decoder = backend
    inputs = make_inputs(processing, case)
    with torch.no_grad():
        hf = reference.generate(**inputs.hf_kwargs(), max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
                                do_sample=False, output_logits=True, return_dict_in_generate=True,
                                pad_token_id=processing.pad_token_id)
    # min_new_tokens suppresses EOS in transformers; generating without EOS ids does the same here
    result = greedy_generate(assets, vision, decoder, inputs, NEW_TOKENS, eos_token_ids=(),
                             pad_token_id=processing.pad_token_id, collect_logits=True)
    assert torch.equal(result.tokens, hf.sequences[:, inputs.input_ids.shape[1]:])
    eos = list(processing.eos_token_ids)
    for step, (expected, actual) in enumerate(zip(hf.logits, result.step_logits)):
        expected = expected.clone()
        expected[:, eos] = actual[:, eos]  # transformers set EOS logits to -inf (min_new_tokens)
        assert (expected - actual).abs().max().item() <= LOGITS_ATOL, f"step {step}"


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("chunk", [1, 4, 9])
def test_chunked_prefill_on_a_filled_cache_gives_the_same_tokens(backend, processing, case, chunk):
    assets, vision, decoder = backend
    inputs = make_inputs(processing, case)
    assert inputs.input_ids.shape[1] > chunk, "the prompt must need several chunks"
    features = encode_images(assets, vision, inputs)
    one_shot = DecoderStepper(assets, decoder).prefill_prompt(inputs, features, logits="all")
    chunked = DecoderStepper(assets, decoder, chunk_size=chunk).prefill_prompt(inputs, features, logits="all")
    valid = inputs.attention_mask.bool()
    assert (chunked.logits[valid] - one_shot.logits[valid]).abs().max().item() <= CHUNK_ATOL
    for name, value in one_shot.outputs.items():
        if name.startswith("present."):
            assert np.abs(np.asarray(chunked.outputs[name]) - np.asarray(value)).max() <= CHUNK_ATOL, name
    kwargs = {"eos_token_ids": (), "pad_token_id": processing.pad_token_id}
    expected = greedy_generate(assets, vision, decoder, inputs, NEW_TOKENS, **kwargs)
    actual = greedy_generate(assets, vision, decoder, inputs, NEW_TOKENS, chunk_size=chunk, **kwargs)
    assert torch.equal(actual.tokens, expected.tokens)


@pytest.mark.parametrize("case", sorted(CASES))
def test_last_position_logits_equal_the_last_of_all(backend, processing, case):
    assets, vision, decoder = backend
    inputs = make_inputs(processing, case)
    features = encode_images(assets, vision, inputs)
    stepper = DecoderStepper(assets, decoder)
    every = stepper.prefill_prompt(inputs, features, logits="all")
    last = stepper.prefill_prompt(inputs, features)
    assert last.logits.shape == (inputs.input_ids.shape[0], 1, every.logits.shape[-1])
    assert last.feed["logits_positions"].tolist() == [inputs.input_ids.shape[1] - 1]
    assert torch.allclose(last.last_logits, every.last_logits, atol=1e-5, rtol=0)
    picked = [0, 3, inputs.input_ids.shape[1] - 1]
    some = stepper.prefill_prompt(inputs, features, logits=picked, chunk_size=4)
    assert torch.allclose(some.logits, every.logits[:, picked], atol=CHUNK_ATOL, rtol=0)


def test_decode_continues_a_saved_cache(backend, processing):
    """save/load restore the cache exactly; truncate drops positions (a turn can be replaced)."""
    assets, vision, decoder = backend
    inputs = make_inputs(processing, "image")
    stepper = DecoderStepper(assets, decoder)
    first = stepper.prefill_prompt(inputs, encode_images(assets, vision, inputs))
    saved = stepper.save()
    token = first.last_logits.argmax(-1)
    once = stepper.decode(token)
    assert stepper.past_length == inputs.input_ids.shape[1] + 1
    stepper.load(saved)
    again = stepper.decode(token)
    assert torch.equal(once.logits, again.logits)
    stepper.truncate(saved.attention_mask.shape[1], saved.next_position)
    assert torch.equal(stepper.decode(token).logits, once.logits)


def test_feed_builder_matches_the_runner_inputs(tiny_checkpoint):
    """Float inputs take the declared dtype; inputs an older export lacks are left out."""
    from trt_pipeline.models.glm4v.model import Glm4vExportModel

    assets = HostAssets.from_model(Glm4vExportModel.from_pretrained(tiny_checkpoint, dtype="float32"))
    everything = FeedBuilder(assets)
    declared = {name: np.dtype(np.float16) for name in everything.past_names}
    declared.update(inputs_embeds=np.dtype(np.float16), attention_mask=np.dtype(np.int64),
                    rope_cos=np.dtype(np.float32), rope_sin=np.dtype(np.float32))
    builder = FeedBuilder(assets, declared)
    ids = torch.tensor([[5, 6, 7]])
    positions = torch.arange(3).view(1, 1, 3).expand(3, 1, 3)
    feed = builder.decoder_feed(builder.token_embeddings(ids), torch.ones(1, 3, dtype=torch.long), positions,
                                builder.empty_past(1))
    assert "logits_positions" not in feed and "position_ids" not in feed
    assert feed["inputs_embeds"].dtype == np.float16 and feed["past_key_values.0.key"].dtype == np.float16
    assert feed["attention_mask"].dtype == np.int64 and feed["rope_cos"].dtype == np.float32
    full = everything.decoder_feed(everything.token_embeddings(ids), torch.ones(1, 3, dtype=torch.long), positions,
                                   everything.empty_past(1), logits="all")
    assert full["logits_positions"].tolist() == [0, 1, 2]
    assert logit_indices("last", 3) == [2] and logit_indices([0, 2], 3) == [0, 2]
    with pytest.raises(ValueError):
        logit_indices([3], 3)
    stepper_state = CacheState(builder.empty_past(1), torch.zeros(1, 0, dtype=torch.long), torch.zeros(1))
    assert stepper_state.next_position.shape == (1,)
