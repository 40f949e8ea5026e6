"""``compare`` on the tiny fp32 export: passes with 100 % token agreement; reports carry the numbers;
missing precisions are skipped by default and an error when requested."""

from __future__ import annotations

import json

import pytest

from trt_pipeline.config import CompareConfig
from trt_pipeline.errors import OnnxModelError


@pytest.fixture(scope="module")
def fp32_report(compare_export, tmp_path_factory):
    from trt_pipeline.compare import compare

    report_dir = tmp_path_factory.mktemp("compare-fp32-report")
    return compare(compare_export, CompareConfig(max_items=3, report_dir=report_dir), show_progress=False)


def test_fp32_passes_with_full_token_agreement(fp32_report):
    assert fp32_report and fp32_report.passed and not fp32_report.failures
    assert [b["name"] for b in fp32_report.backends] == ["torch-export", "ort-fp32"]
    for backend in ("torch-export", "ort-fp32"):
        tokens = fp32_report.token_agreement(backend)
        assert tokens.prompts == 3 and tokens.exact_match_rate == 1.0 and tokens.mean_first_divergence is None
        assert tokens.candidate == tokens.reference and all(len(row) == 16 for row in tokens.reference)
        assert tokens.teacher_forced == tokens.reference and tokens.teacher_forced_agreement == 1.0
    logits = fp32_report.stats("ort-fp32", "logits")
    assert logits.max_abs < 1e-4 and logits.cosine > 0.99999
    assert {g.metric for g in logits.gates} == {"atol", "cosine"}
    assert fp32_report.stats("ort-fp32", "image_features").max_abs < 1e-5
    assert fp32_report.stats("ort-fp32", "present.0.key").passed


def test_inputs_cover_heldout_items_and_profile_extremes(fp32_report, compare_export):
    vision = [s["label"] for s in fp32_report.samples["vision_encoder"]]
    decoder = fp32_report.samples["decoder"]
    assert vision[:3] == ["heldout-001/image", "heldout-002/image", "heldout-003/image"]
    assert any(label.startswith("extreme/patches-min") for label in vision)
    assert any(label.startswith("extreme/patches-max") for label in vision)
    # one image per vision feed: the encoder has no mask input, several images are several calls
    assert all(s["images"] == 1 for s in fp32_report.samples["vision_encoder"])
    dims = json.loads((compare_export / "export.json").read_text())["dims"]
    corners = {(s["batch_size"], s["sequence_length"], s["past_sequence_length"]) for s in decoder
               if s["label"].startswith("extreme/")}
    b, s, p = (dims[k] for k in ("batch_size", "sequence_length", "past_sequence_length"))
    assert (b["max"], s["max"], p["max"]) in corners and (b["min"], s["min"], p["min"]) in corners
    assert "heldout-001/decode" in {s["label"] for s in decoder}


def test_report_files_hold_the_numbers(fp32_report):
    files = {k: fp32_report.report_dir / name for k, name in
             (("json", "compare.json"), ("md", "compare.md"), ("png", "compare_errors.png"))}
    data = json.loads(files["json"].read_text())
    assert data["passed"] is True and data["failures"] == []
    logits = next(t for t in data["tensors"] if t["backend"] == "ort-fp32" and t["output"] == "logits")
    assert logits["max_abs"] == pytest.approx(fp32_report.stats("ort-fp32", "logits").max_abs)
    assert {g["metric"]: g["limit"] for g in logits["gates"]} == {"atol": 1e-4, "cosine": 0.99999}
    tokens = {t["backend"]: t for t in data["tokens"]["backends"]}
    assert tokens["ort-fp32"]["exact_match_rate"] == 1.0 and len(tokens["ort-fp32"]["per_prompt"]) == 3
    assert {s["backend"] for s in data["skipped"]} == {"ort-fp16", "ort-int8", "ort-int4"}
    markdown = files["md"].read_text()
    assert "PASSED" in markdown and f"{logits['max_abs']:.3g}" in markdown
    assert "| ort-fp32 | 100.0% | 3/3 (100.0%) |" in markdown
    assert tokens["ort-fp32"]["teacher_forced_agreement"] == 1.0
    assert "skipped:" in markdown and "onnx/int8 not found; run `autoglm-trt precision int8`" in markdown
    assert files["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (fp32_report.report_dir / "compare_polygraphy" / "decoder.ort-fp32.json").is_file()


def test_requested_missing_precision_is_an_error(compare_export, tmp_path):
    from trt_pipeline.compare import compare

    with pytest.raises(OnnxModelError, match="autoglm-trt precision int8") as info:
        compare(compare_export, CompareConfig(precisions=("fp32", "int8"), report_dir=tmp_path), show_progress=False)
    assert "int8" in str(info.value) and not (tmp_path / "compare.json").exists()


def test_cli_missing_precision_and_engines(compare_export, tmp_path):
    from typer.testing import CliRunner

    from trt_pipeline.cli import app

    result = CliRunner().invoke(app, ["compare", str(compare_export), "--precisions", "fp16", "--report", str(tmp_path)])
    assert result.exit_code == 3 and "onnx/fp16 not found" in result.output
    result = CliRunner().invoke(app, ["compare", str(compare_export), "--engines", "--precisions", "fp32",
                                      "--report", str(tmp_path)])
    assert result.exit_code != 0 and "engine" in result.output
    result = CliRunner().invoke(app, ["compare", str(compare_export), "--tol", "fp16.logits=1"])
    assert result.exit_code == 2 and "unknown tolerance key" in result.output
