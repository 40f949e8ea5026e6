"""Folding the weight Transposes/Reshapes of a streamed export (trt_pipeline.graph.weight_folding): the
folded graph computes what the original does and holds the in-memory export's weights, and the precisions
quantize a streamed export as they do the in-memory one (before: `precision int4` refused the real model's
streamed export; int8 scaled its weights per tensor)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from trt_pipeline.graph.weight_folding import fold_weight_transforms, folded_weights_file, weight_transforms


def _graph(tmp_path: Path) -> Path:
    """x [2, 4] -> MatMul(x, Transpose(W [3, 4])) -> + MatMul(x, Transpose(W)) (W read twice) ->
    Transpose of an activation; plus a 3-D weight with a permutation, and a weight also read directly."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 4)).astype(np.float32)
    v = rng.standard_normal((4, 2, 3)).astype(np.float32)  # Transpose perm [2, 0, 1] -> [3, 4, 2]
    u = rng.standard_normal((4, 4)).astype(np.float32)  # read as is and through a Transpose
    nodes = [
        helper.make_node("Transpose", ["W"], ["Wt"], name="t_w"),
        helper.make_node("MatMul", ["x", "Wt"], ["a"], name="mm_a"),
        helper.make_node("MatMul", ["x", "Wt"], ["b"], name="mm_b"),
        helper.make_node("Add", ["a", "b"], ["ab"]),
        helper.make_node("Transpose", ["ab"], ["y"], name="t_activation"),
        helper.make_node("Transpose", ["V"], ["Vt"], perm=[2, 0, 1], name="t_v"),
        helper.make_node("Reshape", ["Vt", "shape"], ["Vr"]),
        helper.make_node("MatMul", ["x", "Vr"], ["z"], name="mm_v"),
        helper.make_node("Transpose", ["U"], ["Ut"], name="t_u"),
        helper.make_node("MatMul", ["x", "Ut"], ["p"], name="mm_ut"),
        helper.make_node("MatMul", ["x", "U"], ["q"], name="mm_u"),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y", "z", "p", "q")],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(v, "V"), numpy_helper.from_array(u, "U"),
         numpy_helper.from_array(np.array([4, 6], np.int64), "shape")])
    path = tmp_path / "g.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]), str(path))
    return path


def _run(path: Path, x: np.ndarray) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # ORT would fold them itself
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]).run(None, {"x": x})


def test_folding_keeps_the_outputs_and_only_touches_weights(tmp_path: Path) -> None:
    src = _graph(tmp_path)
    folded = folded_weights_file(src, tmp_path / "scratch")
    assert folded != src
    model = onnx.load(str(folded))
    assert [n.name for n in model.graph.node if n.op_type in ("Transpose", "Reshape")] == ["t_activation"]
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    assert not {"W", "V", "Vt", "shape"} & set(inits)  # read only by what was folded
    assert "U" in inits  # also read directly
    assert inits["Wt"].shape == (4, 3) and inits["Vr"].shape == (4, 6)  # Transpose then Reshape: folded in turn
    x = np.random.default_rng(1).standard_normal((2, 4)).astype(np.float32)
    for before, after in zip(_run(src, x), _run(folded, x)):
        np.testing.assert_array_equal(before, after)
    assert folded_weights_file(folded, tmp_path / "again") == folded  # nothing left to fold: the file itself
    assert weight_transforms(model) == [] and fold_weight_transforms(__import__("onnx_ir").load(str(folded))) == []


@pytest.mark.parametrize("component", ["decoder", "vision_encoder"])
def test_streamed_export_folds_to_the_in_memory_weights(streamed_export: Path, compare_export: Path,
                                                        component: str, tmp_path: Path) -> None:
    """Every weight a MatMul of the in-memory export reads as an initializer, the folded streamed
    export reads as one too, with the same values (decoder: Linear weights behind Transposes; vision
    encoder: the patch-embedding and downsample convolutions' weights behind Reshapes)."""
    def matmul_weights(path: Path) -> Counter:
        model = onnx.load(str(path))
        inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        return Counter(inits[n.input[1]].tobytes() for n in model.graph.node
                       if n.op_type in ("MatMul", "Gemm") and n.input[1] in inits)

    streamed = streamed_export / "onnx" / "fp32" / f"{component}.onnx"
    folded = folded_weights_file(streamed, tmp_path)
    in_memory = matmul_weights(compare_export / "onnx" / "fp32" / f"{component}.onnx")
    assert sum(in_memory.values()) > 0
    assert matmul_weights(folded) == in_memory
    assert folded != streamed and weight_transforms(onnx.load(str(streamed), load_external_data=False))


def _copy(export: Path, to: Path) -> Path:
    import shutil

    return Path(shutil.copytree(export, to, ignore=shutil.ignore_patterns("fp16", "int8", "int4")))


def test_int4_of_a_streamed_export_equals_the_in_memory_one(streamed_export: Path, compare_export: Path,
                                                            tmp_path: Path) -> None:
    """RTN is deterministic: the streamed export's int4 decoder holds the in-memory export's int4 weights."""
    from trt_pipeline.config.int4 import Int4Config
    from trt_pipeline.quantize.precision import make_int4

    cfg = Int4Config(method="rtn", activations="fp32", calib_samples=2, evaluate=False,
                     components={"decoder": "int4", "vision_encoder": "fp32"})

    def int4_weights(export: Path) -> Counter:
        model = onnx.load(str(make_int4(export, cfg, show_progress=False) / "decoder.onnx"))
        return Counter(numpy_helper.to_array(t).tobytes() for t in model.graph.initializer
                       if t.data_type == TensorProto.INT4)

    in_memory = int4_weights(_copy(compare_export, tmp_path / "memory"))
    assert sum(in_memory.values()) >= 12  # 2 layers x (q, k, v, o, gate_up, down)
    assert int4_weights(_copy(streamed_export, tmp_path / "streamed")) == in_memory


def test_int8_of_a_streamed_export_scales_its_weights_per_channel(streamed_export: Path, compare_export: Path,
                                                                  tmp_path: Path) -> None:
    """The weight QuantizeLinears get ``axis`` (one scale per output channel) on both exports."""
    from trt_pipeline.config.stages import Int8Config
    from trt_pipeline.quantize.precision import make_int8

    cfg = Int8Config(calib_samples=2, evaluate=False, components={"decoder": "int8", "vision_encoder": "fp32"})

    def quantize_nodes(export: Path) -> Counter:
        model = onnx.load(str(make_int8(export, cfg, show_progress=False) / "decoder.onnx"), load_external_data=False)
        return Counter("per-channel" if any(a.name == "axis" for a in n.attribute) else "per-tensor"
                       for n in model.graph.node if n.op_type == "QuantizeLinear")

    in_memory = quantize_nodes(_copy(compare_export, tmp_path / "memory"))
    assert in_memory["per-channel"] >= 12
    assert quantize_nodes(_copy(streamed_export, tmp_path / "streamed")) == in_memory


@pytest.mark.parametrize("component", ["decoder.onnx", "vision_encoder.onnx"])
def test_the_dataless_folded_structure_finds_the_folded_files_gemms(streamed_export: Path, tmp_path: Path,
                                                                    component: str) -> None:
    """RTN finds its MatMuls on the folded *structure* (no weight read or written); it must see what the
    folded file shows: the same GEMMs, the same weight names and shapes."""
    from trt_pipeline.graph.weight_folding import folded_structure, folded_weights_file
    from trt_pipeline.quantize.int4 import weight_matmuls

    src = streamed_export / "onnx" / "fp32" / component
    proto = onnx.load(str(src), load_external_data=False)
    before = proto.SerializeToString()
    structure = folded_structure(proto)
    assert proto.SerializeToString() == before  # the given model is left as it was
    written = onnx.load(str(folded_weights_file(src, tmp_path)), load_external_data=False)
    assert weight_matmuls(structure) == weight_matmuls(written)
    assert len(weight_matmuls(structure)) >= (12 if component == "decoder.onnx" else 1)
    if component == "decoder.onnx":
        assert not weight_matmuls(proto)  # every Linear weight behind a Transpose, as streamed
