"""precision int4: weight-only INT4 (ModelOpt AWQ / RTN) of the tiny export, ONNX Runtime's 4-bit kernel.

The tiny checkpoint has random weights (flat next-token distributions), so the accuracy numbers
asserted here are loose bounds that catch a broken quantization (wrong axis, wrong scale, lost
weights), not the shipping gates; those are checked on the trained fixture (README, benchmarks/).
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from trt_pipeline.artifacts import read_json, sha256_file
from trt_pipeline.config.int4 import Int4Config


@pytest.fixture(scope="module")
def int4_export(tiny_export: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from trt_pipeline.quantize.precision import make_int4

    out = tmp_path_factory.mktemp("int4") / "export"
    shutil.copytree(tiny_export, out, ignore=shutil.ignore_patterns("fp16", "int8", "int4"))
    # random weights: the table's 0.99 cosine is for trained models (see the module docstring)
    make_int4(out, Int4Config(calib_samples=8, heldout_samples=4, min_cosine=0.9), show_progress=False)
    return out


@pytest.fixture(scope="module")
def decoder_feeds(tiny_export: Path) -> list[dict[str, np.ndarray]]:
    from trt_pipeline.quantize.calibration_reader import CalibrationReader
    from trt_pipeline.quantize.dataset import load_split
    from trt_pipeline.quantize.precision import calibration_folders

    calib_dir, _ = calibration_folders(None)
    reader = CalibrationReader(tiny_export, load_split(calib_dir), 6)
    return reader.feeds("decoder")


@pytest.fixture(scope="module")
def rtn_fp32(tiny_export: Path, decoder_feeds, tmp_path_factory: pytest.TempPathFactory):
    """The tiny decoder with RTN INT4 weights and fp32 activations (the ONNX Runtime CPU flavour)."""
    from trt_pipeline.artifacts.manifests import read_export_manifest
    from trt_pipeline.quantize.int4 import quantize_int4_file

    dst = tmp_path_factory.mktemp("rtn") / "decoder.onnx"
    inputs = read_export_manifest(tiny_export).components["decoder"].inputs
    report = quantize_int4_file(tiny_export / "onnx" / "fp32" / "decoder.onnx", dst, decoder_feeds, inputs=inputs,
                                method="rtn", activations="fp32", quantize_lm_head=True)
    return dst, report


def _weight_matmuls(path: Path) -> dict[str, str]:
    model = onnx.load(str(path), load_external_data=False)
    inits = {t.name for t in model.graph.initializer}
    return {n.name: n.input[1] for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in inits}


def _dq_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.op_type == "DequantizeLinear"]


def test_int4_decoder_has_block_quantized_int4_weights_and_fp16_activations(int4_export: Path) -> None:
    folder = int4_export / "onnx" / "int4"
    model = onnx.load(str(folder / "decoder.onnx"))
    inits = {t.name: t for t in model.graph.initializer}
    assert next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 21
    dqs = _dq_nodes(model)
    entry = read_json(folder / "manifest.json")["components"]["decoder"]
    assert len(dqs) == len(entry["nodes_quantized"]) == 12  # 2 layers x (q, k, v, o, gate_up, down)
    # the automatic block: the tiny decoder's narrowest K is 128, 8 blocks per column -> 16 rows per block
    assert entry["int4"]["block_size"] == 16 and entry["int4"]["block_size_source"].startswith("auto")
    for dq in dqs:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in dq.attribute}
        assert attrs == {"axis": 0, "block_size": 16}
        weight, scale = inits[dq.input[0]], inits[dq.input[1]]
        assert weight.data_type == onnx.TensorProto.INT4
        assert scale.data_type == onnx.TensorProto.FLOAT16  # the MatMul it feeds runs in fp16
        assert list(scale.dims) == [weight.dims[0] // 16, weight.dims[1]]
    # the fp32 decoder's weight MatMuls minus the LM head are exactly the quantized ones
    fp32 = _weight_matmuls(int4_export / "onnx" / "fp32" / "decoder.onnx")
    lm_head = [name for name, reason in entry["nodes_excluded"].items() if "LM head" in reason]
    assert len(lm_head) == 1 and set(entry["nodes_quantized"]) == set(fp32) - set(lm_head)
    assert {i["dtype"] for i in entry["inputs"]} <= {"float32", "int64"}  # graph I/O stays float32
    ops = Counter(n.op_type for n in onnx.load(str(folder / "vision_encoder.onnx")).graph.node)
    assert ops["DequantizeLinear"] == 0  # the vision tower stays fp16 by default


def test_int4_weights_dequantize_to_the_fp32_weights_within_half_a_step(rtn_fp32, tiny_export: Path) -> None:
    dst, report = rtn_fp32
    model = onnx.load(str(dst))
    fp32 = onnx.load(str(tiny_export / "onnx" / "fp32" / "decoder.onnx"))
    original = {t.name: numpy_helper.to_array(t) for t in fp32.graph.initializer}
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    by_output = {n.output[0]: n for n in _dq_nodes(model)}
    matmuls = {n.name: n for n in model.graph.node if n.op_type == "MatMul"}
    source = {n.name: n.input[1] for n in fp32.graph.node if n.op_type == "MatMul"}
    assert len(report.nodes_quantized) == 13  # with the LM head this time
    assert report.block_size == 16  # auto: 8 blocks in the narrowest K (128)
    for name in report.nodes_quantized:
        dq = by_output[matmuls[name].input[1]]
        q = inits[dq.input[0]].astype(np.float32)
        scale = np.repeat(inits[dq.input[1]].astype(np.float32), report.block_size, axis=0)
        w = original[source[name]]
        assert q.shape == w.shape and q.min() >= -8 and q.max() <= 7
        error = np.abs(q * scale - w)
        assert float(np.max(error - scale / 2)) <= 1e-6, name  # round to nearest: at most half a step
        assert float(np.mean(error)) < 0.3 * float(np.mean(np.abs(w)))


def test_ort_fuses_every_int4_matmul_into_matmulnbits(rtn_fp32) -> None:
    from trt_pipeline.quantize.int4 import ort_fused_matmuls

    dst, report = rtn_fp32
    counts = ort_fused_matmuls(dst, optimized=dst.with_name("optimized.onnx"))
    assert counts["MatMulNBits"] == len(report.nodes_quantized) == 13
    assert counts["DequantizeLinear"] == 0  # nothing left unfused
    optimized = onnx.load(str(dst.with_name("optimized.onnx")), load_external_data=False)
    nbits = [n for n in optimized.graph.node if n.op_type == "MatMulNBits"]
    assert all(n.domain == "com.microsoft" for n in nbits)
    attrs = {(a.name, onnx.helper.get_attribute_value(a)) for n in nbits for a in n.attribute if a.name in ("bits", "block_size")}
    assert attrs == {("bits", 4), ("block_size", 16)}
    # the saved graph itself is standard ONNX (TensorRT parses it)
    assert {n.domain for n in onnx.load(str(dst), load_external_data=False).graph.node} <= {"", "ai.onnx"}


def test_int4_fp32_flavour_matches_fp32_on_a_feed(rtn_fp32, tiny_export: Path, decoder_feeds) -> None:
    from trt_pipeline.accuracy.metrics import tensor_metrics
    from trt_pipeline.runtime.onnxruntime_runner import session

    dst, _ = rtn_fp32
    ref, act = session(tiny_export / "onnx" / "fp32" / "decoder.onnx"), session(dst)
    feed = decoder_feeds[0]
    metrics = tensor_metrics(ref.run(["logits"], feed)[0], act.run(["logits"], feed)[0])
    assert 0.9 < metrics.cosine < 0.99999  # close, and not the fp32 graph by mistake


def test_int4_accuracy_is_evaluated_with_the_int4_gates(int4_export: Path) -> None:
    report = read_json(int4_export / "onnx" / "int4" / "accuracy.json")
    assert report["precision"] == "int4" and report["passed"]
    assert {(g["output"], g["threshold"]) for g in report["gates"]} == {
        (o, 0.9) for o in ("image_features", "logits", "present")}
    assert 0.9 <= report["metrics"]["logits"]["cosine_min"] < 0.99999
    assert report["metrics"]["image_features"]["cosine_min"] >= 0.9999  # fp16 vision tower
    assert report["metrics"]["logits"]["top1_agreement"] >= 0.5
    assert report["tokens"]["max_new_tokens"] == 8 and len(report["heldout"]["items"]) == 4  # generation ran


def test_int4_manifest_and_weight_bytes(int4_export: Path) -> None:
    manifest = read_json(int4_export / "onnx" / "int4" / "manifest.json")
    assert manifest["precision"] == "int4" and manifest["stage"] == "int4-weight-only"
    assert manifest["config"]["components"] == {"vision_encoder": "fp16", "decoder": "int4"}
    assert manifest["inputs"]["onnx/fp32/decoder.onnx"] == sha256_file(int4_export / "onnx" / "fp32" / "decoder.onnx")
    entry = manifest["components"]["decoder"]
    int4 = entry["int4"]
    assert int4["method"] == int4["method_used"] == "awq" and int4["fallback_reason"] is None
    assert int4["modelopt_method"] == "awq_full" and int4["opset_from"] == 18 and int4["opset"] == 21
    assert int4["awq_calibration"]["feeds"] >= 2 and int4["awq_calibration"]["tokens_per_feed"] >= 8
    weights = _weight_matmuls(int4_export / "onnx" / "fp32" / "decoder.onnx")
    fp32 = {t.name: t for t in onnx.load(str(int4_export / "onnx" / "fp32" / "decoder.onnx")).graph.initializer}
    quantized = sum(int(np.prod(fp32[weights[n]].dims)) for n in entry["nodes_quantized"])
    assert int4["weight_bytes"]["int4"] == quantized // 2  # 4 bits per weight, no padding
    assert entry["sha256"] == sha256_file(int4_export / "onnx" / "int4" / "decoder.onnx")


def test_auto_block_size_keeps_8_blocks_per_column_up_to_the_fields_128() -> None:
    from trt_pipeline.quantize.int4 import WeightMatMul, auto_block_size

    def dims(*ks: int) -> list[WeightMatMul]:
        return [WeightMatMul(f"m{i}", f"w{i}", k, 64) for i, k in enumerate(ks)]

    assert auto_block_size(dims(4096, 13696)) == 128  # the real 9B (hidden 4096, FFN 13696 = 107 x 128)
    assert auto_block_size(dims(768, 3072)) == 64  # the small preset: 768 / 8 = 96 -> 64
    assert auto_block_size(dims(128, 384)) == 16  # the trained fixture: 128 / 8 = 16
    assert auto_block_size(dims(1024, 1536)) == 128  # exactly 8 blocks of 128
    assert auto_block_size(dims(2048, 2112)) == 64  # 2112 = 33 x 64: 128 does not divide it
    assert auto_block_size(dims(64)) == 16  # never below ONNX Runtime's MatMulNBits minimum


def _gemm_graph(path: Path) -> dict[str, np.ndarray]:
    """x[n, 64] -> Gemm(transB, bias) -> Gemm(no trans, no bias) -> MatMul -> y; returns a feed."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    weights = {"w1": rng.standard_normal((48, 64)).astype(np.float32), "b1": rng.standard_normal(48).astype(np.float32),
               "w2": rng.standard_normal((48, 64)).astype(np.float32), "w3": rng.standard_normal((64, 32)).astype(np.float32)}
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h1"], name="g1", transB=1),
             helper.make_node("Gemm", ["h1", "w2"], ["h2"], name="g2"),
             helper.make_node("MatMul", ["h2", "w3"], ["y"], name="m3")]
    graph = helper.make_graph(nodes, "gemms", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 32])],
                              [numpy_helper.from_array(v, k) for k, v in weights.items()])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return {"x": rng.standard_normal((5, 64)).astype(np.float32)}


def test_gemms_become_matmuls_that_ort_fuses(tmp_path: Path) -> None:
    """Exports write biased linears as Gemm; ORT only fuses DequantizeLinear -> MatMul into MatMulNBits."""
    from trt_pipeline.quantize.int4 import ort_fused_matmuls, quantize_int4_file
    from trt_pipeline.runtime.onnxruntime_runner import session

    feed = _gemm_graph(tmp_path / "gemm.onnx")
    report = quantize_int4_file(tmp_path / "gemm.onnx", tmp_path / "out" / "gemm.onnx", [feed], method="rtn",
                                activations="fp32", block_size=16)
    assert report.nodes_quantized == ["g1", "g2", "m3"] and report.opset_from == 18 and report.opset == 21
    model = onnx.load(str(tmp_path / "out" / "gemm.onnx"))
    ops = Counter(n.op_type for n in model.graph.node)
    assert ops == {"DequantizeLinear": 3, "MatMul": 3, "Add": 1, "Unsqueeze": 1, "Squeeze": 1}
    assert ort_fused_matmuls(tmp_path / "out" / "gemm.onnx")["MatMulNBits"] == 3
    ref = session(tmp_path / "gemm.onnx").run(["y"], feed)[0]
    act = session(tmp_path / "out" / "gemm.onnx").run(["y"], feed)[0]
    cosine = float(np.sum(ref * act) / np.linalg.norm(ref) / np.linalg.norm(act))
    assert 0.98 < cosine < 0.99999  # 4-bit weights: close, not identical
