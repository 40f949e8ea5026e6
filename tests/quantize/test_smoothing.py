"""SmoothQuant-style smoothing: exact before quantization, flatter activations, measured through precision int8."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from trt_pipeline.artifacts import read_json
from trt_pipeline.config import Int8Config
from trt_pipeline.fixtures.presets import PRESETS


def _norm_gemm_model(gamma: np.ndarray, w1: np.ndarray, w2: np.ndarray) -> onnx.ModelProto:
    """x -> Mul(x, gamma) -> {MatMul(W1), MatMul(W2)}: an RMSNorm weight feeding two projections."""
    channels = gamma.size
    nodes = [helper.make_node("Mul", ["x", "gamma"], ["normed"], name="norm_weight"),
             helper.make_node("MatMul", ["normed", "w1"], ["y1"], name="q_proj"),
             helper.make_node("MatMul", ["normed", "w2"], ["y2"], name="up_proj")]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, channels])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y1", "y2")],
        [numpy_helper.from_array(a, n) for n, a in (("gamma", gamma), ("w1", w1), ("w2", w2))])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})


def test_fold_into_the_norm_weight_is_exact_and_flattens_outliers() -> None:
    from trt_pipeline.quantize.smoothing import smooth_model

    rng = np.random.default_rng(0)
    channels = 64
    gamma = rng.uniform(0.5, 1.5, channels).astype(np.float32)
    w1, w2 = (rng.standard_normal((channels, n)).astype(np.float32) * 0.05 for n in (32, 96))
    x = rng.standard_normal((200, channels)).astype(np.float32)
    x[:, [3, 17]] *= 60.0  # outlier channels
    model = _norm_gemm_model(gamma, w1, w2)
    before = _run(model, x)
    x_max = np.abs(x * gamma).max(0)
    report = smooth_model(model, {"normed": x_max}, alpha=0.5)
    after = _run(model, x)
    assert report.folded_into_weight == 1 and report.inserted_mul == 0 and report.gemms == 2
    assert [n.op_type for n in model.graph.node] == ["Mul", "MatMul", "MatMul"]  # no new node
    for b, a in zip(before, after):
        assert np.max(np.abs(a - b)) <= 1e-5 * np.max(np.abs(b))
    new_gamma = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "gamma"))
    smoothed_max = np.abs(x * new_gamma).max(0)
    ratio = lambda v: float(v.max() / np.median(v))  # noqa: E731
    assert ratio(smoothed_max) < ratio(x_max) / 4  # the activation outliers moved into the weights


def _trained_norm_model(gamma: np.ndarray, weights: list[np.ndarray], bias: np.ndarray) -> onnx.ModelProto:
    """The trained export's q/k/v form: ``Mul(gamma, x / sqrt(mean(x^2) + eps))`` -> Reshape [-1, C] ->
    biased Gemms (one ``transB``), and a Shape of the norm output (the reshape back to 3-D)."""
    channels = gamma.size
    inits = {"gamma": gamma, "eps": np.array(1e-5, np.float32), "flat": np.array([-1, channels], np.int64),
             "bias": bias, **{f"w{i}": w for i, w in enumerate(weights)}}
    nodes = [helper.make_node("Mul", ["x", "x"], ["sq"]),
             helper.make_node("ReduceMean", ["sq"], ["ms"], axes=[-1], keepdims=1),
             helper.make_node("Add", ["ms", "eps"], ["ms_eps"]),
             helper.make_node("Sqrt", ["ms_eps"], ["rms"]),
             helper.make_node("Div", ["x", "rms"], ["div"]),
             helper.make_node("Mul", ["gamma", "div"], ["normed"], name="norm_weight"),
             helper.make_node("Shape", ["normed"], ["normed_shape"]),
             helper.make_node("Reshape", ["normed", "flat"], ["normed_2d"])]
    nodes += [helper.make_node("Gemm", ["normed_2d", f"w{i}", "bias"], [f"y{i}"], name=f"proj{i}", transB=i % 2)
              for i in range(len(weights))]
    outputs = ["normed_shape", *(f"y{i}" for i in range(len(weights)))]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, None, channels])],
        [helper.make_tensor_value_info(n, TensorProto.INT64 if n == "normed_shape" else TensorProto.FLOAT, None)
         for n in outputs], [numpy_helper.from_array(a, n) for n, a in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_the_trained_norm_form_through_a_reshape_into_gemms_is_smoothed_exactly() -> None:
    from trt_pipeline.quantize.smoothing import smooth_model, smoothable_inputs

    rng = np.random.default_rng(1)
    channels, n = 64, 48
    gamma = rng.uniform(0.5, 1.5, channels).astype(np.float32)
    weights = [rng.standard_normal((channels, n)).astype(np.float32) * 0.05,  # transB = 0: [K, N]
               rng.standard_normal((n, channels)).astype(np.float32) * 0.05]  # transB = 1: [N, K]
    model = _trained_norm_model(gamma, weights, rng.standard_normal(n).astype(np.float32))
    assert {t: [g.name for g in gemms] for t, gemms in smoothable_inputs(model).items()} == {"normed": ["proj0", "proj1"]}
    x = rng.standard_normal((2, 50, channels)).astype(np.float32)
    x[..., [5, 40]] *= 30.0  # outlier channels
    before = _run(model, x)
    rms = np.sqrt(np.mean(x * x, -1, keepdims=True) + 1e-5)
    report = smooth_model(model, {"normed": np.abs(gamma * x / rms).reshape(-1, channels).max(0)}, alpha=0.5)
    assert report.folded_into_weight == 1 and report.inserted_mul == 0 and report.gemms == 2
    after = _run(model, x)
    assert np.array_equal(before[0], after[0])  # the shape output
    for b, a in zip(before[1:], after[1:]):
        assert np.max(np.abs(a - b)) <= 1e-5 * np.max(np.abs(b))
    assert not np.allclose(numpy_helper.to_array(model.graph.initializer[0]), gamma)  # gamma took 1/s


def test_smoothing_keeps_the_tiny_decoder_outputs(tiny_export: Path, tmp_path: Path) -> None:
    from trt_pipeline.quantize.calibration_reader import CalibrationReader
    from trt_pipeline.quantize.dataset import load_split
    from trt_pipeline.quantize.precision import calibration_folders
    from trt_pipeline.quantize.sensitivity import decoder_logits
    from trt_pipeline.quantize.smoothing import smooth_file

    calib_dir, heldout_dir = calibration_folders(None)
    src = tiny_export / "onnx" / "fp32" / "decoder.onnx"
    report = smooth_file(src, tmp_path / "decoder.onnx", CalibrationReader(tiny_export, load_split(calib_dir), 4)
                         .feeds("decoder"), alpha=0.5)
    # per layer: input norm -> q/k/v, post-attention norm -> gate_up, SwiGLU -> down_proj; final norm -> LM head.
    # Random checkpoints have all-ones RMSNorm weights, which the exporter drops (the norm ends in a Div):
    # every scale goes into a new Mul node.
    layers = PRESETS["tiny"].text["num_hidden_layers"]
    assert len(report.tensors) == report.inserted_mul == 3 * layers + 1 and report.folded_into_weight == 0
    assert report.gemms == 5 * layers + 1
    assert report.scale_max / report.scale_min > 2  # not a no-op
    feeds = CalibrationReader(tiny_export, load_split(heldout_dir), 8).feeds("decoder")  # other data than fitted
    for ref, act in zip(decoder_logits(src, feeds), decoder_logits(tmp_path / "decoder.onnx", feeds)):
        assert np.max(np.abs(act - ref)) <= 1e-5 * max(1.0, float(np.max(np.abs(ref))))


def test_precision_int8_smooth(tiny_export: Path, tmp_path: Path) -> None:
    from trt_pipeline.quantize.node_groups import weighted_gemms
    from trt_pipeline.quantize.precision import make_int8

    out = tmp_path / "export"
    shutil.copytree(tiny_export, out, ignore=shutil.ignore_patterns("fp16", "int8"))
    make_int8(out, Int8Config(calib_samples=8, heldout_samples=4, smooth=True, smooth_alpha=0.5,
                              components={"vision_encoder": "fp16", "decoder": "int8"}), show_progress=False)
    manifest = read_json(out / "onnx" / "int8" / "manifest.json")
    decoder = manifest["components"]["decoder"]
    layers = PRESETS["tiny"].text["num_hidden_layers"]
    assert decoder["smoothing"]["alpha"] == 0.5 and decoder["smoothing"]["gemms"] == 5 * layers + 1
    assert "--smooth" in decoder["legacy_calibration_cache"] and "calibration_cache" not in manifest
    fp32 = onnx.load(str(out / "onnx" / "fp32" / "decoder.onnx"), load_external_data=False)
    assert sorted(decoder["nodes_quantized"]) == sorted(n.name for n in weighted_gemms(fp32))  # all still int8
    accuracy = read_json(out / "onnx" / "int8" / "accuracy.json")
    assert accuracy["metrics"]["logits"]["cosine_min"] >= 0.99 and accuracy["passed"]
