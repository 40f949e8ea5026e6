"""The decoder graph ONNX Runtime actually runs: its optimizer fuses every RMSNorm, K/V are never expanded.

A random checkpoint's norm weights are all ones, and the exporter drops a multiplication by ones,
which leaves no scale for ONNX Runtime's ``SimplifiedLayerNormFusion`` to match; a trained
checkpoint's norms are not ones. So the decoder here gets norm weights ``1 + N(0, 0.1)`` (as a
trained model has), is exported, and the optimised graph ONNX Runtime saves is inspected; its
logits are checked against the torch module it came from.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from trt_pipeline.export.examples import DECODER_FIRST_PAST, decoder_example
from trt_pipeline.export.onnx_export import export_component
from trt_pipeline.models.glm4v.io_spec import component_spec
from trt_pipeline.models.glm4v.model import Glm4vExportModel
from trt_pipeline.runtime.onnxruntime_runner import OrtSettings, session

LOGITS_ATOL = 1e-4


@pytest.fixture(scope="module")
def trained_norm_decoder(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory):
    model = Glm4vExportModel.from_pretrained(tiny_checkpoint, dtype="float32")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.decoder.named_parameters():
            if name.endswith("norm.weight") or name.endswith("layernorm.weight"):
                param.copy_(1 + 0.1 * torch.randn(param.shape, generator=generator))
    path = tmp_path_factory.mktemp("decoder-graph") / "decoder.onnx"
    spec = component_spec(model.dims, "decoder", "float32")
    export_component(model.decoder, spec, decoder_example(model), path, 18, False, variadic_from=DECODER_FIRST_PAST)
    return model, path


def test_onnx_runtime_fuses_every_rmsnorm(trained_norm_decoder, tmp_path: Path) -> None:
    model, path = trained_norm_decoder
    optimized = tmp_path / "decoder.optimized.onnx"
    session(path, settings=OrtSettings(intra_op_threads=1), optimized_model_path=optimized)
    ops = Counter(node.op_type for node in onnx.load(str(optimized)).graph.node)
    norms = 4 * model.dims.text.num_hidden_layers + 1  # 4 per layer + the final norm
    assert ops["SimplifiedLayerNormalization"] == norms, ops
    assert ops["Pow"] == ops["Sqrt"] == ops["Div"] == 0, ops
    assert ops["Expand"] == 0 and ops["Tile"] == 0, ops


def test_trained_norm_decoder_matches_its_torch_module(trained_norm_decoder) -> None:
    model, path = trained_norm_decoder
    args = decoder_example(model)
    with torch.no_grad():
        expected = model.decoder(*args)
    names = component_spec(model.dims, "decoder", "float32")
    feed = {spec.name: arg.numpy() for spec, arg in zip(names.inputs, args)}
    got = session(path, settings=OrtSettings(intra_op_threads=1)).run(None, feed)
    assert np.abs(got[0] - expected[0].numpy()).max() <= LOGITS_ATOL
    for ours, reference in zip(got[1:], expected[1:]):
        assert np.abs(ours - reference.numpy()).max() <= LOGITS_ATOL
