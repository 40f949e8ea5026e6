"""The streaming AutoCast reference run: same statistics and fp16 graph as ModelOpt's, bounded memory.

The graph is an attention-shaped toy (``softmax(x x^T) x`` per layer, so each layer holds an
``N x N`` map), with an out-of-fp16-range branch, integer shape arithmetic, a bool tensor and an
empty tensor: the cases ModelOpt's range rule sees in the exported encoders.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from trt_pipeline.errors import ConfigError
from trt_pipeline.graph.autocast import autocast_model
from trt_pipeline.graph.reference_ranges import collect_ranges

DIM = 16


def attention_toy(layers: int = 3, seed: int = 0) -> onnx.ModelProto:
    """``layers`` x (x x^T -> Softmax -> @ x -> MatMul W), a x 1000 branch (> data_max), ints, bool, empty."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(np.array([0], np.int64), "zero"),
             numpy_helper.from_array(np.array([1000.0], np.float32), "big"),
             numpy_helper.from_array(np.array([0.0], np.float32), "zf")]
    nodes = []
    h = "x"
    for i in range(layers):
        inits.append(numpy_helper.from_array((rng.standard_normal((DIM, DIM)) / 4).astype(np.float32), f"w{i}"))
        nodes += [
            helper.make_node("Transpose", [h], [f"t{i}"], perm=[1, 0], name=f"transpose{i}"),
            helper.make_node("MatMul", [h, f"t{i}"], [f"s{i}"], name=f"scores{i}"),
            helper.make_node("Softmax", [f"s{i}"], [f"p{i}"], axis=-1, name=f"softmax{i}"),
            helper.make_node("MatMul", [f"p{i}", h], [f"c{i}"], name=f"context{i}"),
            helper.make_node("MatMul", [f"c{i}", f"w{i}"], [f"h{i}"], name=f"proj{i}"),
        ]
        h = f"h{i}"
    nodes += [
        helper.make_node("Mul", [h, "big"], ["scaled"], name="scale_up"),          # |.| > 512: stays fp32
        helper.make_node("ReduceSum", ["scaled"], ["total"], keepdims=0, name="total"),
        helper.make_node("Shape", ["x"], ["shape"], name="shape"),                  # int64 path
        helper.make_node("Gather", ["shape", "zero"], ["rows"], axis=0, name="rows"),
        helper.make_node("Greater", [h, "zf"], ["positive"], name="positive"),     # bool
        helper.make_node("Cast", ["positive"], ["positive_f"], to=TensorProto.FLOAT, name="positive_f"),
        helper.make_node("Slice", [h, "zero", "zero"], ["empty"], name="empty"),    # 0 rows
        helper.make_node("ReduceSum", ["empty"], ["empty_sum"], keepdims=0, name="empty_sum"),
        helper.make_node("Add", ["total", "empty_sum"], ["y"], name="out"),
    ]
    graph = helper.make_graph(
        nodes, "attention_toy", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", DIM])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, []),
         helper.make_tensor_value_info("rows", TensorProto.INT64, [1]),
         helper.make_tensor_value_info("positive_f", TensorProto.FLOAT, ["n", DIM])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return onnx.shape_inference.infer_shapes(model)


def feeds(count: int, rows: int, seed: int = 1) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((rows + 3 * i, DIM)).astype(np.float32)} for i in range(count)]


def test_statistics_match_modelopt_reference_runner(tmp_path):
    """Every tensor ModelOpt records gets the same absmax / min / max / shape from the streaming run."""
    from modelopt.onnx.autocast.referencerunner import ReferenceRunner
    from polygraphy.json import save_json

    model, batch = attention_toy(), feeds(4, 24)
    path = tmp_path / "feeds.json"
    save_json(batch, str(path))
    expected = ReferenceRunner(onnx.load_from_string(model.SerializeToString()), ["cpu"]).run(str(path))
    got, run = collect_ranges(model, batch)
    assert run.feeds == 4
    assert set(got) == set(expected), set(got) ^ set(expected)
    for name, stats in expected.items():
        ours = got[name]
        assert ours.shape == tuple(stats.shape), name
        for field in ("absmax", "min_val", "max_val"):
            np.testing.assert_allclose(float(getattr(ours, field)), float(getattr(stats, field)),
                                       rtol=1e-6, atol=1e-6, err_msg=f"{name}.{field}")
    assert got["scaled"].absmax > 512 and got["empty"].size == 0 and got["empty"].absmax == 0
    assert len(model.graph.node) == len(attention_toy().graph.node), "the caller's model must be restored"


def test_fp16_graph_identical_to_modelopt_runner():
    """Same nodes kept fp32 and the same converted graph as with ModelOpt's own reference run."""
    model, batch = attention_toy(), feeds(3, 20)
    ours, report = autocast_model(model, batch)
    theirs, reference = autocast_model(model, batch, reference="modelopt")
    assert report.reference_runner == "streaming" and reference.reference_runner == "modelopt"
    assert report.nodes_kept_fp32 == reference.nodes_kept_fp32
    assert "scale_up" in report.nodes_kept_fp32
    assert report.kept_fp32_reasons.keys() == reference.kept_fp32_reasons.keys()
    assert ours.graph.SerializeToString() == theirs.graph.SerializeToString()


def test_kept_statistics_do_not_grow_with_feeds_or_patches():
    """The reference run keeps a few scalars per tensor: the same bytes for 2 or 8 feeds, 16 or 512 rows."""
    model = attention_toy()
    _, few = collect_ranges(model, feeds(2, 16))
    _, many = collect_ranges(model, feeds(8, 16))
    _, wide = collect_ranges(model, feeds(2, 512))
    assert few.tensors == many.tensors == wide.tensors > 20
    assert few.kept_bytes == many.kept_bytes == wide.kept_bytes
    assert few.kept_bytes < 64 * few.tensors
    assert wide.kept_bytes < 512 * 512 * 4 / 100  # far below one attention map of one feed
    assert [h["kept_bytes"] for h in many.history] == [many.kept_bytes] * 8


def test_unknown_reference_runner_is_a_config_error():
    with pytest.raises(ConfigError, match="reference runner"):
        autocast_model(attention_toy(), feeds(1, 8), reference="all-outputs")


_RSS_PROBE = textwrap.dedent("""
    import importlib.util, json, sys
    sys.path[:0] = {paths!r}
    spec = importlib.util.spec_from_file_location("toy", {test_file!r})
    toy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(toy)
    from trt_pipeline.bench.memory import peak_rss_bytes  # VmHWM: ru_maxrss starts at the parent's RSS
    from trt_pipeline.graph.autocast import autocast_model
    model, batch = toy.attention_toy(layers=LAYERS), toy.feeds({feeds}, ROWS)
    autocast_model(toy.attention_toy(), toy.feeds(1, 8), reference={runner!r})  # warm up imports and arenas
    before = peak_rss_bytes()
    autocast_model(model, batch, reference={runner!r})
    print(json.dumps({{"grew_mb": (peak_rss_bytes() - before) / 2**20}}))
""")
LAYERS, ROWS = 6, 1024
MAP_MB = ROWS * ROWS * 4 / 2**20  # one layer's attention scores (the probabilities are another)


def _peak_growth_mb(runner: str, feeds: int) -> float:
    code = _RSS_PROBE.format(paths=sys.path, runner=runner, test_file=__file__, feeds=feeds)
    code = code.replace("LAYERS", str(LAYERS)).replace("ROWS", str(ROWS))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["grew_mb"]


def test_peak_rss_does_not_grow_with_feeds():
    """ModelOpt's runner keeps every tensor of every feed (6 feeds x 6 layers of 1024^2 maps: > 300 MB);
    the streaming run's peak is one inference: 6 feeds cost what 1 feed costs, within one attention map."""
    one, six = _peak_growth_mb("streaming", 1), _peak_growth_mb("streaming", 6)
    assert six - one < MAP_MB, f"streaming peak grew {six - one:.0f} MB from 1 to 6 feeds"
    modelopt = _peak_growth_mb("modelopt", 6)
    assert modelopt > 2 * LAYERS * 6 * MAP_MB, f"the probe no longer measures the blow-up ({modelopt:.0f} MB)"
    assert six < modelopt / 3, f"streaming {six:.0f} MB vs ModelOpt's {modelopt:.0f} MB"
