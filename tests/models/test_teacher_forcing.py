"""Teacher-forced token agreement on the trained fixture, with the export-friendly torch modules.

* The same model as the reference: teacher forcing predicts exactly the greedy tokens (100 %),
  which checks that one prefill of prompt + reference puts every token at the
  M-RoPE position and cache slot greedy decoding gives it.
* A deliberately perturbed decoder (the logits of every even absolute position pushed to one
  token) must score exactly the share of reference tokens predicted from odd positions, computed
  here from the prompt lengths alone, and (almost) never an exact greedy match.
"""

from __future__ import annotations

import numpy as np
import pytest

from trt_pipeline.accuracy.tokens import TokenAgreement
from trt_pipeline.models.glm4v.generation import HostAssets, greedy_generate, teacher_forced_tokens

NEW_TOKENS = 16
PROMPTS = (("Turn on location services", None), ("打开蓝牙和定位", (360, 780)), ("Reply to Mom: see you on Saturday", (320, 700)))


class EvenPositionSaboteur:
    """A decoder runner whose logits at even absolute positions all pick ``token``."""

    def __init__(self, inner, token: int) -> None:
        self.inner, self.token = inner, token

    @property
    def is_active(self) -> bool:
        return self.inner.is_active

    def get_input_metadata(self):
        return self.inner.get_input_metadata()

    def infer(self, feed, check_inputs=True):
        out = dict(self.inner.infer(feed, check_inputs=check_inputs))
        past = feed["past_key_values.0.key"].shape[2]
        absolute = past + np.asarray(feed["logits_positions"])
        logits = np.array(out["logits"], dtype=np.float32)
        logits[:, absolute % 2 == 0, self.token] = 1e4
        out["logits"] = logits
        return out


@pytest.fixture(scope="module")
def trained_setup(trained_checkpoint):
    from trt_pipeline.models.glm4v.model import Glm4vExportModel
    from trt_pipeline.models.glm4v.processing import Glm4vProcessing
    from trt_pipeline.runtime.torch_runner import torch_component_runners

    model = Glm4vExportModel.from_pretrained(trained_checkpoint, dtype="float32")
    processing = Glm4vProcessing(trained_checkpoint)
    runners = torch_component_runners(model)
    for runner in runners:
        runner.activate()
    yield HostAssets.from_model(model), runners, processing
    for runner in runners:
        runner.deactivate()


def _inputs(processing, prompt: str, size):
    from PIL import Image

    images = [[Image.new("RGB", size, (30, 120, 200))]] if size else None
    return processing([prompt], images)


def _greedy(assets, vision, decoder, processing, inputs) -> list[int]:
    from trt_pipeline.models.glm4v.generation import strip_after_eos

    eos = processing.eos_token_ids
    result = greedy_generate(assets, vision, decoder, inputs, NEW_TOKENS, eos_token_ids=eos,
                             pad_token_id=processing.pad_token_id)
    return strip_after_eos(result.token_lists()[0], eos)


def test_same_model_predicts_its_own_greedy_tokens(trained_setup):
    assets, (vision, decoder), processing = trained_setup
    agreement = TokenAgreement("torch", "fp32", 1.0)
    for index, (prompt, size) in enumerate(PROMPTS):
        inputs = _inputs(processing, prompt, size)
        reference = _greedy(assets, vision, decoder, processing, inputs)
        assert len(reference) == NEW_TOKENS, "the trained fixture answers with a full reply"
        forced = teacher_forced_tokens(assets, vision, decoder, inputs, reference)
        assert forced == reference
        agreement.add(str(index), reference, reference, forced)
    assert agreement.teacher_forced_agreement == 1.0


def test_perturbed_decoder_scores_the_computed_share(trained_setup):
    assets, (vision, decoder), processing = trained_setup
    token = processing.tokenizer.convert_tokens_to_ids("<|observation|>") - 1  # <|assistant|>: never in a reply
    saboteur = EvenPositionSaboteur(decoder, token)
    agreement = TokenAgreement("sabotaged", "fp32", 0.0)
    matches = total = 0
    for index, (prompt, size) in enumerate(PROMPTS):
        inputs = _inputs(processing, prompt, size)
        reference = _greedy(assets, vision, decoder, processing, inputs)
        assert token not in reference
        start = inputs.input_ids.shape[1] - 1  # the position that predicts reference[0]
        odd = [p % 2 == 1 for p in range(start, start + len(reference))]
        matches, total = matches + sum(odd), total + len(reference)
        forced = teacher_forced_tokens(assets, vision, saboteur, inputs, reference)
        assert [f == r for f, r in zip(forced, reference)] == odd
        agreement.add(str(index), reference, _greedy(assets, vision, saboteur, processing, inputs), forced)
    assert agreement.teacher_forced_agreement == pytest.approx(matches / total)
    assert 0.4 < agreement.teacher_forced_agreement < 0.6
    assert agreement.exact_match_rate == 0.0


def test_teacher_forcing_refuses_a_batch(trained_setup):
    assets, (vision, decoder), processing = trained_setup
    batch = processing(["Open WeChat", "Open Maps"])
    with pytest.raises(ValueError, match="one prompt at a time"):
        teacher_forced_tokens(assets, vision, decoder, batch, [1, 2])
    assert teacher_forced_tokens(assets, vision, decoder, _inputs(processing, "Open WeChat", None), []) == []


class RefusingRunner:
    """A runner that fails the test if anything reaches it: the contract must refuse first."""

    is_active = True

    def get_input_metadata(self):
        raise AssertionError("the runner was consulted before the contract refused the request")

    def infer(self, feed, check_inputs=True):
        raise AssertionError("the runner ran before the contract refused the request")


def test_greedy_and_teacher_forcing_refuse_an_image_beyond_the_contract_before_running(trained_setup, tmp_path):
    from trt_pipeline.errors import ShapeError
    from trt_pipeline.models.glm4v.contract import ExportContract

    assets, _, processing = trained_setup
    inputs = _inputs(processing, PROMPTS[1][0], PROMPTS[1][1])
    merge2 = assets.dims.vision.spatial_merge_size ** 2
    image_tokens = int(inputs.image_grid_thw[0].prod()) // merge2
    contract = ExportContract(tmp_path / "export.json", max_batch=1, max_chunk=4096, max_past=4096,
                              min_image_tokens=1, max_image_tokens=image_tokens - 1)
    refusing = RefusingRunner()
    with pytest.raises(ShapeError, match=f"{image_tokens}.*at most {image_tokens - 1}"):
        greedy_generate(assets, refusing, refusing, inputs, NEW_TOKENS, contract=contract)
    with pytest.raises(ShapeError, match=f"{image_tokens}.*at most {image_tokens - 1}"):
        teacher_forced_tokens(assets, refusing, refusing, inputs, [1, 2, 3], contract=contract)
