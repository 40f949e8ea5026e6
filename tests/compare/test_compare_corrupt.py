"""A corrupted export turns ``autoglm-trt compare`` red: non-zero exit naming the output and numbers."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
from onnx import numpy_helper

LM_HEAD_SCALE = 1.5


def _scale_lm_head(decoder_path, vocab: int) -> str:
    """Multiply the decoder's LM-head weight (the one initializer with a vocab-sized axis) in place."""
    model = onnx.load(str(decoder_path))
    (weight,) = [t for t in model.graph.initializer if vocab in t.dims and len(t.dims) == 2]
    scaled = numpy_helper.to_array(weight).astype(np.float32) * LM_HEAD_SCALE
    weight.CopyFrom(numpy_helper.from_array(scaled, weight.name))
    onnx.save(model, str(decoder_path))
    return weight.name


def test_scaled_lm_head_fails_compare_naming_logits(compare_export, tmp_path):
    from typer.testing import CliRunner

    from trt_pipeline.cli import app

    corrupt = tmp_path / "export"
    shutil.copytree(compare_export, corrupt, ignore=shutil.ignore_patterns("reports"))
    vocab = json.loads((corrupt / "hf" / "config.json").read_text())["text_config"]["vocab_size"]
    _scale_lm_head(corrupt / "onnx" / "fp32" / "decoder.onnx", vocab)

    report = tmp_path / "report"
    result = CliRunner().invoke(app, [
        "compare", str(corrupt), "--precisions", "fp32", "--max-items", "2", "--no-torch-export",
        "--no-extremes", "--report", str(report),
        "--no-verify",  # this test is about the numbers; the sha256 check would refuse the edited file first
    ])
    assert result.exit_code == 5, result.output  # AccuracyError
    assert "ort-fp32 decoder output `logits`: max abs error" in result.output
    assert "gate <= 0.0001" in result.output
    assert "present." not in result.output  # the KV cache is untouched by the LM head

    data = json.loads((report / "compare.json").read_text())
    assert data["passed"] is False
    logits = next(t for t in data["tensors"] if t["output"] == "logits")
    assert logits["passed"] is False and logits["max_abs"] > 1e-2
    assert logits["cosine"] > 0.99999  # a uniform scale keeps the direction: only the atol gate sees it
    assert [g["passed"] for g in logits["gates"] if g["metric"] == "atol"] == [False]
    assert all(t["passed"] for t in data["tensors"] if t["output"] != "logits")
    # Scaling all logits keeps every argmax: greedy tokens still agree, the tensor gate is what fails.
    assert data["tokens"]["backends"][0]["exact_match_rate"] == 1.0
    assert f"{logits['max_abs']:.3g}" in result.output
    assert "**FAIL**" in (report / "compare.md").read_text()
    assert (report / "compare_errors.png").stat().st_size > 0
