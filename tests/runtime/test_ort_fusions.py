"""The load-time residual + RMSNorm fusion (``OrtSettings.fuse_norms``): the same numbers, fewer nodes, file untouched.

Checked on the fused-ops decoders (concat and inplace caches) against a session without the
fusion: logits and caches over prefill, chunked prefill and decode steps, one row and a padded
batch; the pairs that must not fuse (bias adds, half scales, other axes) stay; portable graphs
are loaded from their file as before.
"""

from __future__ import annotations

import hashlib

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from trt_pipeline.models.glm4v.generation import HostAssets
from trt_pipeline.models.glm4v.stepper import DecoderStepper
from trt_pipeline.runtime.onnxruntime_runner import OrtSettings, onnx_path, ort_runner, session
from trt_pipeline.runtime.ort_fusions import SKIP_NORM, fuse_residual_rms_norms, fused_model_bytes


def run_steps(export_dir, fuse: bool, ids: torch.Tensor, chunk: int | None) -> tuple[torch.Tensor, dict]:
    """Logits of a prefill (in chunks) and 6 greedy decode steps, and the final cache, on one settings."""
    settings = OrtSettings(intra_op_threads=1, fuse_norms=fuse)
    runner = ort_runner(onnx_path(export_dir, "fp32", "decoder"), settings=settings)
    with runner:
        stepper = DecoderStepper(HostAssets.from_export_dir(export_dir), runner, chunk_size=chunk)
        stepper.reset(ids.shape[0])
        logits = [stepper.prefill_tokens(ids, logits="all").logits]
        for _ in range(6):
            logits.append(stepper.decode(logits[-1][:, -1].argmax(-1)).logits)
        cache = {name: np.array(value) for name, value in stepper.state.past.items()}
    return torch.cat(logits, dim=1), cache


@pytest.mark.parametrize("export", ["tiny_fused_export", "tiny_inplace_export"])
@pytest.mark.parametrize("batch,chunk", [(1, None), (1, 3), (2, 4)])
def test_fused_session_gives_the_same_numbers(request, export, batch, chunk):
    export_dir = request.getfixturevalue(export)
    ids = torch.randint(3, 200, (batch, 9), generator=torch.Generator().manual_seed(batch))
    plain_logits, plain_cache = run_steps(export_dir, False, ids, chunk)
    fused_logits, fused_cache = run_steps(export_dir, True, ids, chunk)
    assert float((plain_logits - fused_logits).abs().max()) <= 1e-6
    assert torch.equal(plain_logits.argmax(-1), fused_logits.argmax(-1))
    for name, value in plain_cache.items():
        assert float(np.abs(value - fused_cache[name]).max()) <= 1e-6, name


def test_every_residual_norm_of_the_fused_decoder_fuses_and_the_file_is_untouched(tiny_fused_export, tmp_path):
    path = onnx_path(tiny_fused_export, "fp32", "decoder")
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    model = onnx.load(str(path), load_external_data=False)
    norms = sum(node.op_type == "RMSNormalization" for node in model.graph.node)
    layers = sum(node.op_type == "Attention" for node in model.graph.node)
    fused = fuse_residual_rms_norms(model)
    # per layer: post_attention_layernorm (x + attn) and the next input_layernorm (x + mlp); not the first
    # layer's input norm (the embeddings) nor the final norm (after the logit-position gather)
    assert fused == 2 * layers - 1
    assert sum(node.op_type == SKIP_NORM for node in model.graph.node) == fused
    assert sum(node.op_type == "RMSNormalization" for node in model.graph.node) == norms - fused
    sess = session(path, settings=OrtSettings(intra_op_threads=1), optimized_model_path=tmp_path / "opt.onnx")
    assert sess is not None
    optimized = onnx.load(str(tmp_path / "opt.onnx"), load_external_data=False)
    assert sum(node.op_type == SKIP_NORM for node in optimized.graph.node) == fused
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def test_portable_graphs_load_from_their_file(tiny_export):
    assert fused_model_bytes(onnx_path(tiny_export, "fp32", "decoder")) is None


def norm_graph(scale_type: int, bias_add: bool, axis: int) -> onnx.ModelProto:
    """x, r -> s = x + r (or x + bias) -> RMSNormalization(s) -> y; s is also an output (the residual)."""
    hidden = 8
    scale = numpy_helper.from_array(np.linspace(0.5, 1.5, hidden).astype(
        np.float32 if scale_type == TensorProto.FLOAT else np.float16), "scale")
    inits = [scale]
    second = "r"
    if bias_add:
        inits.append(numpy_helper.from_array(np.ones(hidden, np.float32), "bias"))
        second = "bias"
    nodes = [helper.make_node("Add", ["x", second], ["s"]),
             helper.make_node("RMSNormalization", ["s", "scale"], ["y"], axis=axis, epsilon=1e-5)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 3, hidden])
                                           for n in ("x", "r")],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, hidden]),
                               helper.make_tensor_value_info("s", TensorProto.FLOAT, [2, 3, hidden])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])


def test_the_rewrite_keeps_the_residual_sum_and_its_numbers(tmp_path):
    import onnxruntime as ort

    model = norm_graph(TensorProto.FLOAT, bias_add=False, axis=-1)
    rng = np.random.default_rng(0)
    feed = {"x": rng.standard_normal((2, 3, 8)).astype(np.float32), "r": rng.standard_normal((2, 3, 8)).astype(np.float32)}
    plain = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)
    assert fuse_residual_rms_norms(model) == 1
    assert [node.op_type for node in model.graph.node] == [SKIP_NORM]
    fused = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)
    for a, b in zip(plain, fused):
        assert float(np.abs(a - b).max()) <= 1e-6


@pytest.mark.parametrize("scale_type,bias_add,axis", [(TensorProto.FLOAT16, False, -1), (TensorProto.FLOAT, True, -1),
                                                      (TensorProto.FLOAT, False, 1)])
def test_pairs_with_other_numbers_are_left_alone(scale_type, bias_add, axis):
    model = norm_graph(scale_type, bias_add, axis)
    assert fuse_residual_rms_norms(model) == 0
    assert [node.op_type for node in model.graph.node] == ["Add", "RMSNormalization"]
