"""The twin's fp32 gate (issue 12): ``max(atol, 3 x drift64)``, drift64 being transformers-fp32 against
transformers in float64 on the same inputs (trt_pipeline/export/float64_reference.py).

It must (1) record the float64 drift beside every fp32 error, (2) still fail a genuinely wrong graph
(one weight scaled by 1 %), and (3) grow with width and length as fp32 rounding does, which is what
lets it pass the 9B's widths without a hand-loosened atol."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest

from trt_pipeline.accuracy.gates import DEFAULT_GATES
from trt_pipeline.config import ExportConfig
from trt_pipeline.export.twin_numerics import TwinShapes, compare, export_outputs, reference_outputs
from trt_pipeline.export.validate import FP32_DRIFT_FACTOR
from trt_pipeline.export.writer import write_export
from trt_pipeline.models.glm4v.config import load_dims

RANGES = dict(max_batch=2, max_seq=16, max_kv=24, max_image_tokens=16)
SHAPES = TwinShapes(vision_patches=(16, 64), prefill=12, append=6, logits_per_step=4)
SCALED = ("model.visual.blocks.1.mlp.down_proj.weight", "model.language_model.layers.1.mlp.down_proj.weight")


def _fp32_export(checkpoint, out):
    return write_export(checkpoint, out, ExportConfig(dtype="float32", streaming=True, validate=False, **RANGES),
                        show_progress=False)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(checkpoint, fp32 export, transformers fp32 outputs, float64 outputs) of a tiny bf16 model."""
    from trt_pipeline.fixtures.checkpoint_factory import write_checkpoint

    root = tmp_path_factory.mktemp("fp32gate")
    checkpoint = write_checkpoint(root / "ck", preset="tiny", seed=7, dtype="bfloat16")
    dims = load_dims(checkpoint)
    return (checkpoint, _fp32_export(checkpoint, root / "out"), reference_outputs(checkpoint, "float32", dims, SHAPES),
            reference_outputs(checkpoint, "float64", dims, SHAPES))


def test_fp32_points_record_the_float64_drift_and_pass(tiny):
    checkpoint, out, reference32, reference64 = tiny
    actual = export_outputs(out, "fp32", "float32", checkpoint, SHAPES, reference32)
    gates = DEFAULT_GATES["fp32"]
    results = compare(reference32, actual, SHAPES, gates, "float32", drift=reference64, drift_against="float64")
    assert len(results) == 2 + 3 * 2
    for r in results:
        base = gates.output("image_features" if r.output == "image_features" else "logits")
        assert r.drift_against == "float64" and 0 < r.reference_drift < 1e-5, r
        assert r.atol == max(base.atol, FP32_DRIFT_FACTOR * r.reference_drift) and r.min_cosine == base.cosine, r
        assert 0 < r.export_drift < 1e-5, r  # the export's own fp32 rounding, recorded beside it
        assert r.passed and 0 < r.max_abs, r
    assert reference64.logits[0].dtype == np.float64 and reference64.image_features[0].dtype == np.float64


def test_fp32_gate_fails_a_graph_with_one_weight_scaled_by_one_percent(tiny, tmp_path):
    """The same checkpoint with one vision and one decoder weight x 1.01, exported and compared with
    transformers on the original: every image and logits point fails, by far more than the gate."""
    from safetensors.torch import load_file, save_file

    checkpoint, _, reference32, reference64 = tiny
    wrong = tmp_path / "wrong"
    shutil.copytree(checkpoint, wrong)
    tensors = load_file(str(wrong / "model.safetensors"))
    for name in SCALED:
        tensors[name] = (tensors[name].float() * 1.01).to(tensors[name].dtype)
    save_file(tensors, str(wrong / "model.safetensors"), metadata={"format": "pt"})
    actual = export_outputs(_fp32_export(wrong, tmp_path / "out"), "fp32", "float32", wrong, SHAPES, reference32)
    results = compare(reference32, actual, SHAPES, DEFAULT_GATES["fp32"], "float32", drift=reference64,
                      drift_against="float64")
    gated = [r for r in results if r.output in ("image_features", "logits")]
    assert gated and not any(r.passed for r in gated), [(r.output, r.max_abs, r.atol) for r in gated]
    assert min(r.max_abs / r.atol for r in gated) > 10, [(r.output, r.max_abs, r.atol) for r in gated]


def _vision_drift(tmp_path, name: str, patches: int, **overrides) -> tuple[float, float]:
    """(max |transformers-fp32 - float64|, RMS of the features) of one image of ``patches`` patches."""
    from trt_pipeline.fixtures.checkpoint_factory import write_checkpoint

    checkpoint = write_checkpoint(tmp_path / name, preset="tiny", seed=1, dtype="bfloat16", overrides=overrides)
    dims, shapes = load_dims(checkpoint), TwinShapes(vision_patches=(patches,), prefill=2, append=1, logits_per_step=1)
    features32 = reference_outputs(checkpoint, "float32", dims, shapes).image_features[0]
    features64 = reference_outputs(checkpoint, "float64", dims, shapes).image_features[0]
    return float(np.abs(features32 - features64).max()), float(np.sqrt(np.mean(features64**2)))


def test_fp32_rounding_and_so_the_gate_grow_with_width_and_length(tmp_path):
    """fp32 rounding of a length-n reduction is ~ eps32 x sqrt(n) x magnitude. The float64 drift of the
    vision tower, relative to its output's RMS, grows from width 64 / 64 patches to width 512 / 1,024
    patches, and stays within a small factor of eps32 x sqrt(longest reduction) for both (the patch
    embedding's 1,176 inputs at width 64), so the gate's drift term is fp32 rounding that scales with
    the model, not a constant picked by hand. (The 9B's vision tower, 4,096 patches: drift / RMS
    ~1e-5, longest reduction 13,696: the same band; docs/export.md.)"""
    eps32 = 2.0**-24
    narrow, narrow_rms = _vision_drift(tmp_path, "narrow", 64)
    wide, wide_rms = _vision_drift(tmp_path, "wide", 1024, vision_hidden_size=512, vision_intermediate_size=1536,
                                   vision_num_heads=8)
    assert wide > 5 * narrow and wide / wide_rms > 1.5 * narrow / narrow_rms, (narrow, narrow_rms, wide, wide_rms)
    for drift, rms, longest in ((narrow, narrow_rms, 1176), (wide, wide_rms, 1536)):
        assert 0.5 < drift / rms / (eps32 * math.sqrt(longest)) < 10, (drift, rms, longest)
