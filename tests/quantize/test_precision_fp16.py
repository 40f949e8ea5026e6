"""precision fp16: ModelOpt AutoCast of the tiny export, manifest, held-out accuracy gates, generation."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from trt_pipeline.artifacts import read_json, sha256_file
from trt_pipeline.config import Fp16Config

SAMPLES = dict(calib_samples=4, heldout_samples=4)


def _copy_export(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("fp16", "int8"))
    return dst


@pytest.fixture(scope="module")
def fp16_export(tiny_export: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from trt_pipeline.quantize.precision import make_fp16

    out = _copy_export(tiny_export, tmp_path_factory.mktemp("fp16") / "export")
    folder = make_fp16(out, Fp16Config(**SAMPLES), show_progress=False)
    assert folder == out / "onnx" / "fp16"
    return out


def test_fp16_meets_the_gates_on_held_out_data(fp16_export: Path) -> None:
    report = read_json(fp16_export / "onnx" / "fp16" / "accuracy.json")
    logits = report["metrics"]["logits"]
    assert logits["cosine_min"] >= 0.9999
    assert logits["p99_rel"] <= 1e-2
    assert logits["top1_agreement"] >= 0.99
    assert report["metrics"]["image_features"]["cosine_min"] >= 0.9999
    assert report["metrics"]["present"]["cosine_min"] >= 0.9999
    assert report["tokens"]["token_agreement"] >= 0.9 and report["tokens"]["first_token_agreement"] == 1.0
    assert report["passed"] and all(g["passed"] for g in report["gates"])
    gated = {(g["output"], g["metric"]) for g in report["gates"]}
    assert gated >= {("logits", "cosine_min"), ("logits", "p99_rel")}
    # the gate table's fp16 rows (the same as compare's), on every output group
    assert gated == {(o, m) for o in ("image_features", "logits", "present") for m in ("cosine_min", "p99_rel")}
    assert report["heldout"]["num_items"] == 4
    assert all(item.startswith("heldout-") for item in report["heldout"]["items"])


def test_fp16_graphs_hold_fp16_weights_and_keep_fp32_io(fp16_export: Path) -> None:
    for component in ("vision_encoder", "decoder"):
        model = onnx.load(str(fp16_export / "onnx" / "fp16" / f"{component}.onnx"))
        weights = [t for t in model.graph.initializer if t.dims and int(np.prod(t.dims)) >= 64]
        half = [t for t in weights if t.data_type == onnx.TensorProto.FLOAT16]
        assert weights and len(half) / len(weights) > 0.9, component
        for value in (*model.graph.input, *model.graph.output):
            assert value.type.tensor_type.elem_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.INT64), value.name
        assert any(n.op_type == "Cast" for n in model.graph.node)
    size32 = (fp16_export / "onnx" / "fp32" / "decoder.onnx").stat().st_size
    size16 = (fp16_export / "onnx" / "fp16" / "decoder.onnx").stat().st_size
    assert size16 < 0.6 * size32


def test_fp16_manifest(fp16_export: Path) -> None:
    folder = fp16_export / "onnx" / "fp16"
    manifest = read_json(folder / "manifest.json")
    assert manifest["precision"] == "fp16" and manifest["stage"] == "autocast"
    assert manifest["inputs"]["onnx/fp32/decoder.onnx"] == sha256_file(fp16_export / "onnx" / "fp32" / "decoder.onnx")
    assert manifest["inputs"]["export.json"] == sha256_file(fp16_export / "export.json")
    assert any(key.startswith("calibration:") for key in manifest["inputs"])
    assert manifest["config"]["keep_io_types"] is True and manifest["config"]["calib_samples"] == 4
    assert manifest["calibration"]["num_items"] == 4 and manifest["calibration"]["feeds"]["decoder_decode"] == 4
    assert "nvidia-modelopt" in manifest["tool_versions"] and "onnxruntime-gpu" in manifest["tool_versions"]
    assert manifest["accuracy"]["passed"] is True
    for component in ("vision_encoder", "decoder"):
        entry = manifest["components"][component]
        assert entry["file"] == f"{component}.onnx" and entry["external_data"] is None
        assert entry["sha256"] == sha256_file(folder / entry["file"])
        assert entry["precision"] == "fp16"
        assert isinstance(entry["nodes_kept_fp32"], list)
        assert entry["autocast"]["reference_feeds"] > 0
        assert {i["dtype"] for i in entry["inputs"]} <= {"float32", "int64"}
    decoder = manifest["components"]["decoder"]
    # the additive attention mask (float32 min) cannot be represented in fp16: those nodes stay fp32
    assert decoder["nodes_kept_fp32"], "AutoCast kept no node in fp32"
    assert set(decoder["autocast"]["kept_fp32_reasons"]) <= set(decoder["nodes_kept_fp32"])
    assert any("out of range" in r for r in decoder["autocast"]["kept_fp32_reasons"].values())


def test_generate_with_fp16_onnx_runtime(fp16_export: Path) -> None:
    from trt_pipeline.generate import GenerateRequest, generate
    from trt_pipeline.quantize.dataset import default_root

    image = default_root() / "heldout" / "images" / "h_settings_en.png"
    request = GenerateRequest(fp16_export, ["Open Settings"], [[image]], backend="ort", precision="fp32", max_new_tokens=4)
    fp32 = generate(request)
    request.precision = "fp16"
    fp16 = generate(request)
    assert fp16.precision == "fp16" and len(fp16.token_ids[0]) == 4
    assert fp16.token_ids == fp32.token_ids


def test_cli_fp16_without_io_types(tiny_export: Path, tmp_path: Path) -> None:
    """--no-keep-io-types: float16 graph I/O; the host loop casts its float32 feeds (generate works)."""
    from typer.testing import CliRunner

    from trt_pipeline.cli import app
    from trt_pipeline.generate import GenerateRequest, generate

    out = _copy_export(tiny_export, tmp_path / "export")
    result = CliRunner().invoke(app, ["precision", "fp16", str(out), "--no-keep-io-types", "--calib-samples", "3",
                                      "--heldout-samples", "3", "--json"])
    assert result.exit_code == 0, result.output
    manifest = read_json(out / "onnx" / "fp16" / "manifest.json")
    inputs = {i["name"]: i["dtype"] for i in manifest["components"]["decoder"]["inputs"]}
    assert inputs["inputs_embeds"] == "float16" and inputs["attention_mask"] == "int64"
    outputs = {o["name"]: o["dtype"] for o in manifest["components"]["decoder"]["outputs"]}
    assert outputs["logits"] == "float16"
    assert manifest["accuracy"]["passed"]
    output = generate(GenerateRequest(out, ["Open Settings"], [[]], backend="ort", precision="fp16", max_new_tokens=3))
    assert len(output.token_ids[0]) == 3
