"""precision int8: ModelOpt Q/DQ PTQ of the tiny export, calibration cache, gates, per-component precision."""

from __future__ import annotations

import re
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import numpy_helper

from trt_pipeline.artifacts import read_json, sha256_file
from trt_pipeline.config import Int8Config
from trt_pipeline.runtime.onnxruntime_runner import session


def _copy_export(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("fp16", "int8"))
    return dst


@pytest.fixture(scope="module")
def int8_export(tiny_export: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from trt_pipeline.quantize.precision import make_int8

    out = _copy_export(tiny_export, tmp_path_factory.mktemp("int8") / "export")
    make_int8(out, Int8Config(calib_samples=8, heldout_samples=4), show_progress=False)
    return out


def _ops(path: Path) -> Counter:
    return Counter(n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node)


def test_int8_graphs_have_qdq_on_the_gemms(int8_export: Path) -> None:
    manifest = read_json(int8_export / "onnx" / "int8" / "manifest.json")
    for component in ("vision_encoder", "decoder"):
        ops = _ops(int8_export / "onnx" / "int8" / f"{component}.onnx")
        entry = manifest["components"][component]
        assert entry["precision"] == "int8"
        assert ops["QuantizeLinear"] == entry["qdq_counts"]["QuantizeLinear"] > 0
        assert ops["DequantizeLinear"] == entry["qdq_counts"]["DequantizeLinear"] >= ops["QuantizeLinear"]
        # one weight Q/DQ per quantized GEMM + activation Q/DQs (shared by GEMMs reading the same tensor)
        assert ops["QuantizeLinear"] > len(entry["nodes_quantized"]) > 0
        assert _ops(int8_export / "onnx" / "fp32" / f"{component}.onnx")["QuantizeLinear"] == 0
        # attention BMMs are left in high precision and reported as such
        reasons = entry["nodes_excluded"]
        assert reasons and all("attention BMM" in r for r in reasons.values())


def test_int8_meets_the_gates_on_held_out_data(int8_export: Path) -> None:
    report = read_json(int8_export / "onnx" / "int8" / "accuracy.json")
    assert report["metrics"]["logits"]["cosine_min"] >= 0.99
    assert report["metrics"]["image_features"]["cosine_min"] >= 0.99
    assert report["metrics"]["logits"]["top1_agreement"] >= 0.8
    assert report["tokens"]["first_token_agreement"] >= 0.75
    assert report["tokens"]["token_agreement"] >= 0.5
    assert report["passed"]
    gated = {(g["output"], g["metric"]) for g in report["gates"]}
    assert gated >= {("logits", "cosine_min"), ("image_features", "cosine_min")}
    assert gated == {(o, "cosine_min") for o in ("image_features", "logits", "present")}  # the gate table's int8 rows


def test_int8_manifest(int8_export: Path) -> None:
    manifest = read_json(int8_export / "onnx" / "int8" / "manifest.json")
    assert manifest["precision"] == "int8" and manifest["stage"] == "int8-ptq"
    assert manifest["method"] == "percentile" and manifest["config"]["percentile"] == 99.99
    assert manifest["inputs"]["onnx/fp32/vision_encoder.onnx"] == sha256_file(
        int8_export / "onnx" / "fp32" / "vision_encoder.onnx")
    assert manifest["calibration"]["num_items"] == 8
    assert manifest["calibration"]["feeds"]["decoder_prefill"] == 8
    assert manifest["heldout"]["num_items"] == 4
    assert manifest["config"]["components"] == {"vision_encoder": "int8", "decoder": "int8"}
    assert manifest["tool_versions"]["nvidia-modelopt"]
    for component, entry in manifest["components"].items():
        assert entry["sha256"] == sha256_file(int8_export / "onnx" / "int8" / entry["file"])
        assert {i["dtype"] for i in entry["inputs"]} <= {"float32", "int64"}  # graph I/O unchanged
        assert entry["int8"]["method"] == "percentile"
        assert entry["int8"]["calibration_feeds"] > 0


def test_calibration_cache_format_and_scales(int8_export: Path) -> None:
    from modelopt.onnx.quantization.calib_utils import import_scales_from_calib_cache

    from trt_pipeline.quantize.int8 import read_calibration_cache

    folder = int8_export / "onnx" / "int8"
    lines = (folder / "calibration.cache").read_text().splitlines()
    assert lines[0] == "TRT-100300-EntropyCalibration2"
    assert all(re.fullmatch(r"[^:]+: [0-9a-f]{8}", line) for line in lines[1:]), lines[:5]
    for component in ("vision_encoder", "decoder"):
        header, scales = read_calibration_cache(folder / f"{component}.calibration.cache")
        assert header == lines[0] and scales
        # ModelOpt's own reader agrees (big-endian float32 bits)
        theirs = import_scales_from_calib_cache(str(folder / f"{component}.calibration.cache"))
        assert {k[: -len("_scale")]: v for k, v in theirs.items()} == pytest.approx(scales)
        # the legacy cache and the explicit Q/DQ scales are the same numbers (fp16-rounded in the graph)
        model = onnx.load(str(folder / f"{component}.onnx"))
        inits = {t.name: t for t in model.graph.initializer}
        checked = 0
        for node in model.graph.node:
            if node.op_type == "QuantizeLinear" and node.input[0] in scales and node.input[1] in inits:
                q_scale = float(numpy_helper.to_array(inits[node.input[1]]))
                assert q_scale == pytest.approx(scales[node.input[0]], rel=1e-3)
                checked += 1
        assert checked > 0
    manifest = read_json(folder / "manifest.json")["calibration_cache"]
    assert manifest["entries"] == len(lines) - 1
    merged = dict(line.split(": ") for line in lines[1:])
    assert not set(manifest["dropped_name_collisions"]) & set(merged)


def test_cache_helpers_round_trip(tmp_path: Path) -> None:
    from trt_pipeline.quantize.int8 import (
        read_calibration_cache,
        scale_to_hex,
        trt_version_number,
        write_calibration_cache,
    )

    assert scale_to_hex(1.0) == "3f800000" and scale_to_hex(0.125) == "3e000000"
    assert trt_version_number("10.3.0") == 100300 and trt_version_number("8.6.1") == 8601
    path = write_calibration_cache(tmp_path / "c.cache", {"a": 0.5, "b": 3.0 / 127}, "10.9.0")
    header, scales = read_calibration_cache(path)
    assert header == "TRT-100900-EntropyCalibration2" and scales == pytest.approx({"a": 0.5, "b": 3.0 / 127})


def test_collect_amax_methods(int8_export: Path) -> None:
    from trt_pipeline.quantize.calibration_reader import CalibrationReader
    from trt_pipeline.quantize.dataset import default_root, load_split
    from trt_pipeline.quantize.int8 import collect_amax

    reader = CalibrationReader(int8_export, load_split(default_root() / "calib"), 2)
    feeds = reader.feeds("vision_encoder")
    src = int8_export / "onnx" / "fp32" / "vision_encoder.onnx"
    values = {m: collect_amax(src, feeds, ["pixel_values"], m)["pixel_values"] for m in ("max", "percentile", "entropy")}
    assert values["max"] == pytest.approx(max(float(np.abs(f["pixel_values"]).max()) for f in feeds))
    assert 0 < values["percentile"] <= values["max"] and 0 < values["entropy"] <= values["max"] * 1.01


def test_generate_with_int8_onnx_runtime(int8_export: Path) -> None:
    from trt_pipeline.generate import GenerateRequest, generate
    from trt_pipeline.quantize.dataset import default_root

    image = default_root() / "heldout" / "images" / "h_map_en.png"
    out = generate(GenerateRequest(int8_export, ["Find a coffee shop"], [[image]], backend="ort", precision="int8",
                                   max_new_tokens=4))
    assert out.precision == "int8" and len(out.token_ids[0]) == 4


def test_per_component_precision(tiny_export: Path, tmp_path: Path) -> None:
    """INT8 decoder + FP16 (AutoCast) vision tower inside onnx/int8, via the CLI flags."""
    from typer.testing import CliRunner

    from trt_pipeline.cli import app

    out = _copy_export(tiny_export, tmp_path / "export")
    result = CliRunner().invoke(app, [
        "precision", "int8", str(out), "--method", "max", "--vision-precision", "fp16",
        "--decoder-precision", "int8", "--calib-samples", "3", "--no-evaluate",
    ])
    assert result.exit_code == 0, result.output
    folder = out / "onnx" / "int8"
    manifest = read_json(folder / "manifest.json")
    assert manifest["method"] == "max" and manifest["accuracy"] is None
    assert manifest["components"]["vision_encoder"]["precision"] == "fp16"
    assert "nodes_kept_fp32" in manifest["components"]["vision_encoder"]
    assert manifest["components"]["decoder"]["precision"] == "int8"
    assert _ops(folder / "vision_encoder.onnx")["QuantizeLinear"] == 0
    vision = onnx.load(str(folder / "vision_encoder.onnx"))
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in vision.graph.initializer)
    assert _ops(folder / "decoder.onnx")["QuantizeLinear"] > 0
    assert (folder / "decoder.calibration.cache").is_file() and not (folder / "vision_encoder.calibration.cache").exists()
    assert manifest["calibration_cache"]["per_component"].keys() == {"decoder"}


def test_external_data_models(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """Weights in .onnx.data files (what > 2 GB models need) go through AutoCast and PTQ via the path APIs."""

    from trt_pipeline.config import ExportConfig, Fp16Config
    from trt_pipeline.export.exporter import export
    from trt_pipeline.quantize.precision import make_fp16, make_int8

    out = export(tiny_checkpoint, tmp_path / "export",
                 ExportConfig(max_seq=96, max_kv=128, max_image_tokens=64, external_data=True, validate=False,
                              simplify=False, components=("decoder",)), show_progress=False)
    fp32 = sorted(p.name for p in (out / "onnx" / "fp32").iterdir())
    assert "decoder.onnx.data" in fp32
    make_fp16(out, Fp16Config(calib_samples=2, evaluate=False, components=("decoder",)), show_progress=False)
    make_int8(out, Int8Config(calib_samples=2, evaluate=False, components={"decoder": "int8"}), show_progress=False)
    assert sorted(p.name for p in (out / "onnx" / "fp32").iterdir()) == fp32  # nothing written beside the source
    for precision in ("fp16", "int8"):
        folder = out / "onnx" / precision
        entry = read_json(folder / "manifest.json")["components"]["decoder"]
        assert entry["external_data"] == "decoder.onnx.data"
        assert entry["external_data_sha256"] == sha256_file(folder / "decoder.onnx.data")
        model = onnx.load(str(folder / "decoder.onnx"), load_external_data=False)
        assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
        assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no scratch left behind
        assert read_json(folder / "manifest.json")["calibration"]["images_dropped"] > 0
        assert session(folder / "decoder.onnx").get_inputs()
        # plain ORT with default options too (Android users): ORT 1.24's SimplifiedLayerNormFusion crashed
        # on the fp16 graph of a --no-simplify export before graph/half_norms.py
        plain = onnxruntime.InferenceSession(str(folder / "decoder.onnx"), providers=["CPUExecutionProvider"])
        feed = {i.name: np.zeros([d if isinstance(d, int) else (0 if "past" in d else 1) for d in i.shape],
                                 np.int64 if "int64" in i.type else np.float32) for i in plain.get_inputs()}
        logits = plain.run(["logits"], feed)[0]
        assert logits.shape[-1] > 0 and np.isfinite(logits).all()


def test_modelproto_wrappers(int8_export: Path) -> None:
    """ModelProto -> ModelProto forms of AutoCast and PTQ (what the graph/ and quantize/ steps expose)."""
    from trt_pipeline.graph.autocast import autocast_model
    from trt_pipeline.quantize.calibration_reader import CalibrationReader
    from trt_pipeline.quantize.dataset import default_root, load_split
    from trt_pipeline.quantize.int8 import quantize_int8_model

    model = onnx.load(str(int8_export / "onnx" / "fp32" / "vision_encoder.onnx"))
    feeds = CalibrationReader(int8_export, load_split(default_root() / "calib"), 2).feeds("vision_encoder")
    half, report = autocast_model(model, feeds)
    assert isinstance(half, onnx.ModelProto) and report.nodes_fp16 > 0 and report.reference_feeds == len(feeds)
    quantized, qreport = quantize_int8_model(model, feeds, method="max")
    assert Counter(n.op_type for n in quantized.graph.node)["QuantizeLinear"] == qreport.qdq_counts["QuantizeLinear"] > 0
    assert qreport.nodes_quantized and qreport.method == "max"
