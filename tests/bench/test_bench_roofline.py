"""Roofline maths and weight-byte counting (no model runs)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from trt_pipeline.bench.roofline import (
    RooflinePoint,
    kv_cache_bytes,
    lower_bound_s,
    onnx_weight_bytes,
    roofline_fraction,
    torch_decoder_weight_bytes,
)


def test_kv_cache_bytes_counts_k_and_v_over_layers_heads_and_context():
    # phone-9b: 40 layers, 2 KV heads, head dim 128, fp16: 40 KiB per token
    assert kv_cache_bytes(40, 2, 128, context=1, dtype_bytes=2) == 2 * 40 * 2 * 128 * 2 == 40960
    assert kv_cache_bytes(40, 2, 128, context=1000, batch=2, dtype_bytes=2) == 40960 * 1000 * 2
    assert kv_cache_bytes(2, 2, 32, context=0) == 0
    with pytest.raises(ValueError):
        kv_cache_bytes(0, 2, 32, context=4)


def test_lower_bound_and_fraction():
    assert lower_bound_s(10e9, 20e9) == pytest.approx(0.5)
    assert roofline_fraction(0.5, 2.0) == pytest.approx(0.25)
    with pytest.raises(ValueError):
        lower_bound_s(1, 0)
    with pytest.raises(ValueError):
        roofline_fraction(1.0, 0.0)


def test_roofline_point_combines_weights_kv_and_bandwidth():
    # 360 MB of weights + 12 MB of KV at 24 GB/s -> 15.5 ms lower bound; measured 31 ms -> 50 %
    point = RooflinePoint("ort-fp32", context=512, weight_bytes=360_000_000, kv_bytes=12_000_000,
                          bandwidth_gbps=24.0, measured_ms=31.0)
    assert point.bytes_moved == 372_000_000
    assert point.lower_bound_ms == pytest.approx(15.5)
    assert point.fraction == pytest.approx(0.5)
    data = point.to_dict()
    assert data["fraction"] == pytest.approx(0.5) and data["lower_bound_ms"] == pytest.approx(15.5)


def test_onnx_weight_bytes_uses_dims_and_dtypes_without_loading_external_data(tmp_path):
    w32 = numpy_helper.from_array(np.zeros((64, 32), np.float32), "w32")  # 8192 B
    w16 = numpy_helper.from_array(np.zeros((10, 10), np.float16), "w16")  # 200 B
    w8 = numpy_helper.from_array(np.zeros((100,), np.int8), "w8")  # 100 B
    const = helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.zeros(4, np.float32)))  # 16 B
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32])
    graph = helper.make_graph([const, helper.make_node("MatMul", ["x", "w32"], ["y"])], "g", [x], [y],
                              initializer=[w32, w16, w8])
    model = helper.make_model(graph)
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location="m.onnx.data", size_threshold=0)
    (tmp_path / "m.onnx.data").write_bytes(b"")  # truncated data must not matter: never read
    assert onnx_weight_bytes(path) == 8192 + 200 + 100 + 16


def test_torch_decoder_weight_bytes_skips_vision_and_embeddings_but_counts_tied_lm_head():
    embed = torch.nn.Embedding(100, 8)  # 3200 B, a row lookup: excluded
    layer = torch.nn.Linear(8, 8, bias=False)  # 256 B
    vision = torch.nn.Linear(8, 8, bias=False)  # excluded
    named = [("model.language_model.embed_tokens.weight", embed.weight), ("model.language_model.layers.0.q.weight", layer.weight),
             ("model.visual.blocks.0.weight", vision.weight), ("lm_head.weight", embed.weight)]  # tied
    assert torch_decoder_weight_bytes(named) == 256 + 3200
    # the same parameter under two non-excluded names is counted once
    assert torch_decoder_weight_bytes(named + [("model.language_model.layers.0.q_again.weight", layer.weight)]) == 256 + 3200
