"""AutoCast'd graphs divide their RMSNorms by the root through Reciprocal (plain ONNX Runtime loads them)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnxruntime
from onnx import TensorProto, helper, numpy_helper

from trt_pipeline.graph.half_norms import reciprocal_norms


def rms_norm_model(dtype: int = TensorProto.FLOAT) -> onnx.ModelProto:
    """y = x / sqrt(mean(x^2) + eps) * w, the fp32 export's spelling, plus an unrelated Div."""
    np_dtype = np.float16 if dtype == TensorProto.FLOAT16 else np.float32
    inits = [numpy_helper.from_array(np.array(2.0, np_dtype), "two"),
             numpy_helper.from_array(np.array([-1], np.int64), "axes"),
             numpy_helper.from_array(np.array(1e-5, np_dtype), "eps"),
             numpy_helper.from_array(np.linspace(0.5, 1.5, 8).astype(np_dtype), "w")]
    nodes = [helper.make_node("Pow", ["x", "two"], ["sq"], name="pow"),
             helper.make_node("ReduceMean", ["sq", "axes"], ["mean"], name="mean"),
             helper.make_node("Add", ["mean", "eps"], ["var"], name="add"),
             helper.make_node("Sqrt", ["var"], ["root"], name="sqrt"),
             helper.make_node("Div", ["x", "root"], ["normed"], name="div"),
             helper.make_node("Mul", ["w", "normed"], ["y"], name="mul"),
             helper.make_node("Div", ["x", "two"], ["half"], name="not_a_norm")]
    graph = helper.make_graph(nodes, "norm", [helper.make_tensor_value_info("x", dtype, [2, 8])],
                              [helper.make_tensor_value_info("y", dtype, [2, 8]),
                               helper.make_tensor_value_info("half", dtype, [2, 8])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})


def test_norm_divisions_become_reciprocal_and_values_stay() -> None:
    model = rms_norm_model()
    x = np.random.default_rng(0).standard_normal((2, 8)).astype(np.float32)
    before = run(model, x)
    assert reciprocal_norms(model) == 1
    ops = Counter(node.op_type for node in model.graph.node)
    assert ops["Reciprocal"] == 1 and ops["Div"] == 1  # only the norm's Div; the unrelated one stays
    onnx.checker.check_model(model)
    after = run(model, x)
    assert np.abs(after[0] - before[0]).max() <= 1e-6
    assert np.array_equal(after[1], before[1])


def test_half_norm_graph_loads_in_plain_onnxruntime() -> None:
    """The fp16 chain (what AutoCast makes of the fp32 norm) loads with default session options."""
    model = rms_norm_model(TensorProto.FLOAT16)
    assert reciprocal_norms(model) == 1
    x = np.random.default_rng(1).standard_normal((2, 8)).astype(np.float16)
    y = run(model, x)[0].astype(np.float32)
    xf = x.astype(np.float32)
    expected = xf / np.sqrt((xf**2).mean(-1, keepdims=True) + 1e-5) * np.linspace(0.5, 1.5, 8)
    assert np.abs(y - expected).max() <= 1e-2
