"""A 1080x2400 phone screenshot through chunked ONNX Runtime generation equals transformers (issue 11).

The tiny-preset version of ``benchmarks/screenshot_step.py``: a full-resolution phone screen drawn
by the calibration renderer, resized by the processor under a reduced ``--max-pixels`` (the same
value for export, ORT and transformers), an agent-style instruction, and a prompt several times
longer than the export's ``sequence_length`` max, so the prefill runs in chunks on a filled cache.
The 16 greedy tokens must equal transformers' ``generate``; the vision features and the prefill's
last-position logits must match transformers' ``get_image_features`` and forward pass.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SCREEN = (1080, 2400)
MAX_PIXELS = 240 * 532  # 1080x2400 -> 224x532 px (multiples of 28) -> 608 patches, 152 image tokens
MAX_SEQ = 64  # the prompt (192 tokens, 152 of them image) is prefilled in 3 chunks
MAX_KV = 320
NEW_TOKENS = 16
INSTRUCTION = "Task: turn on Wi-Fi. Look at the screen and answer with one action, e.g. do(action=\"Tap\")."
FEATURE_ATOL = 1e-4
LOGITS_ATOL = 1e-4
COSINE_MIN = 0.99999


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().flatten(), b.double().flatten()
    return float(a @ b / (a.norm() * b.norm()))


@pytest.fixture(scope="module")
def screenshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tools.make_calibration.fonts import Fonts
    from tools.make_calibration.generate import render
    from tools.make_calibration.spec import load_spec

    spec = next(s for s in load_spec().screens if s.name == "settings_zh")
    path = tmp_path_factory.mktemp("screen") / "screenshot.png"
    render(dataclasses.replace(spec, size=SCREEN), Fonts(latin_only=True), {}).save(path, format="PNG")
    return path


@pytest.fixture(scope="module")
def screen_export(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from trt_pipeline.config import ExportConfig
    from trt_pipeline.export.exporter import export

    cfg = ExportConfig(workload="tiny", max_seq=MAX_SEQ, max_kv=MAX_KV, max_pixels=MAX_PIXELS,
                       simplify=False, validate=False)
    return export(tiny_checkpoint, tmp_path_factory.mktemp("screen") / "export", cfg, show_progress=False)


def test_screenshot_chunked_ort_equals_transformers(tiny_checkpoint: Path, screen_export: Path, screenshot: Path):
    from transformers import Glm4vForConditionalGeneration

    from trt_pipeline.generate import export_chunk_size
    from trt_pipeline.models.glm4v.generation import HostAssets, greedy_generate
    from trt_pipeline.models.glm4v.processing import Glm4vProcessing
    from trt_pipeline.runtime.onnxruntime_runner import ort_component_runners

    processing = Glm4vProcessing(screen_export / "hf", max_pixels=MAX_PIXELS)
    inputs = processing([INSTRUCTION], [[screenshot]])
    chunk = export_chunk_size(screen_export)
    prompt = inputs.input_ids.shape[1]
    assert chunk == MAX_SEQ and math.ceil(prompt / chunk) >= 3, (prompt, chunk)
    assert inputs.image_grid_thw.tolist() == [[1, 38, 16]] and inputs.num_image_tokens == 152

    vision, decoder = ort_component_runners(screen_export, "fp32")
    with vision, decoder:
        ort = greedy_generate(HostAssets.from_export_dir(screen_export), vision, decoder, inputs, NEW_TOKENS,
                              processing.eos_token_ids, processing.pad_token_id, collect_logits=True,
                              chunk_size=chunk)

    model = Glm4vForConditionalGeneration.from_pretrained(str(tiny_checkpoint), dtype=torch.float32).eval()
    with torch.no_grad():
        feats = model.model.get_image_features(inputs.pixel_values, inputs.image_grid_thw)
        feats = getattr(feats, "pooler_output", feats)
        feats = torch.cat(list(feats)) if isinstance(feats, (tuple, list)) else feats
        ref = model.generate(**inputs.hf_kwargs(), max_new_tokens=NEW_TOKENS, do_sample=False,
                             eos_token_id=processing.eos_token_ids or None, pad_token_id=processing.pad_token_id,
                             output_logits=True, return_dict_in_generate=True)

    assert ort.image_features.shape == feats.shape == (inputs.num_image_tokens, feats.shape[1])
    assert (ort.image_features - feats).abs().max().item() < FEATURE_ATOL
    assert cosine(ort.image_features, feats) > COSINE_MIN
    prefill_ref = ref.logits[0].float()
    assert (ort.step_logits[0] - prefill_ref).abs().max().item() < LOGITS_ATOL
    assert cosine(ort.step_logits[0], prefill_ref) > COSINE_MIN
    expected = ref.sequences[0, prompt:].tolist()
    assert len(expected) == NEW_TOKENS, "transformers stopped early: pick a prompt that does not hit EOS"
    assert ort.token_lists()[0] == expected
    assert np.unique(expected).size > 1, "a constant token stream would not test much"
