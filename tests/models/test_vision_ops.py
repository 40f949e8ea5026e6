"""The vision encoder's ONNX Runtime flavour (``export --vision-ops onnxruntime``): com.microsoft
``MultiHeadAttention`` instead of MatMul -> Softmax -> MatMul, so ONNX Runtime's CPU never holds the
``heads x N x N`` scores of a full screenshot (``benchmarks/vision_attention.py``).

Checked: the graph and export.json; the features against transformers (the export's validation) and
against the portable encoder on ONNX Runtime at several image sizes; the eager module; the flavour's
defaults and refusals (bf16, TensorRT, INT8); fp16 through ModelOpt AutoCast, which reads the graph
with opset-23 ``Attention`` standing in for the contrib op (:mod:`trt_pipeline.graph.contrib_stand_ins`).
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper
from typer.testing import CliRunner

from trt_pipeline.artifacts import read_export_manifest
from trt_pipeline.cli.app import app
from trt_pipeline.config import ExportConfig
from trt_pipeline.errors import ConfigError
from trt_pipeline.graph.contrib_stand_ins import standard_stand_ins
from trt_pipeline.models.glm4v.decoder_ops import tensorrt_hint
from trt_pipeline.models.glm4v.generation import HostAssets
from trt_pipeline.models.glm4v.stepper import FeedBuilder
from trt_pipeline.runtime.onnxruntime_runner import onnx_path


def vision_ops_of(path: Path) -> Counter:
    graph = onnx.load(str(path), load_external_data=False).graph
    return Counter((node.domain, node.op_type) for node in graph.node)


def features(export: Path, grid: tuple[int, int], precision: str = "fp32") -> np.ndarray:
    """The export's vision encoder on ONNX Runtime for one random image of ``grid`` patches (the host's feed)."""
    assets = HostAssets.from_export_dir(export)
    rng = np.random.default_rng(grid[0] * 100 + grid[1])
    pixels = torch.from_numpy(rng.standard_normal((grid[0] * grid[1], assets.dims.vision.patch_dim), dtype=np.float32))
    (feed,) = FeedBuilder(assets).vision_feeds(pixels, torch.tensor([[1, *grid]]))
    session = ort.InferenceSession(str(onnx_path(export, precision, "vision_encoder")), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    return session.run(None, {k: np.asarray(v) for k, v in feed.items() if k in names})[0].astype(np.float64)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a.ravel() @ b.ravel() / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_the_onnxruntime_export_spells_vision_attention_as_multi_head_attention(tiny_ort_export, tiny_export):
    depth = read_export_manifest(tiny_ort_export).checkpoint_dims["vision"]["depth"]
    ops = vision_ops_of(onnx_path(tiny_ort_export, "fp32", "vision_encoder"))
    assert ops[("com.microsoft", "MultiHeadAttention")] == depth and not ops[("", "Softmax")]
    assert vision_ops_of(onnx_path(tiny_export, "fp32", "vision_encoder"))[("", "Softmax")] == depth  # portable
    record = json.loads((tiny_ort_export / "export.json").read_text())
    assert record["vision_graph"]["ops"] == "onnxruntime" and "flash attention" in record["vision_graph"]["attention"]
    assert read_export_manifest(tiny_ort_export).vision_ops == "onnxruntime"
    assert read_export_manifest(tiny_export).vision_ops == "portable"
    report = json.loads((tiny_ort_export / "reports" / "validation.json").read_text())
    vision = [r for r in report["results"] if r["component"] == "vision_encoder"]
    assert len(vision) >= 3 and all(r["passed"] and r["max_abs"] <= 1e-5 for r in vision)  # the fp32 gate


@pytest.mark.parametrize("grid", [(2, 2), (8, 12), (32, 32)])
def test_features_equal_the_portable_encoders_on_onnxruntime(tiny_ort_export, tiny_export, grid):
    """Same checkpoint, same image: the flash-attention graph's features are the portable graph's."""
    expected, got = features(tiny_export, grid), features(tiny_ort_export, grid)
    assert got.shape == expected.shape == (grid[0] * grid[1] // 4, 128)
    assert float(np.abs(got - expected).max()) <= 1e-5 and cosine(got, expected) > 0.9999999


def test_the_eager_module_is_the_same_maths_either_way(tiny_checkpoint):
    from trt_pipeline.models.glm4v.model import Glm4vExportModel

    model = Glm4vExportModel.from_pretrained(tiny_checkpoint, dtype="float32")
    generator = torch.Generator().manual_seed(0)
    dims = model.dims.vision
    n = 64
    inputs = (torch.randn(n, dims.patch_dim, generator=generator), *torch.randn(2, n, dims.head_dim, generator=generator),
              torch.randn(n, dims.hidden_size, generator=generator))
    with torch.no_grad():
        portable = model.visual.use_ops("portable")(*inputs)
        contrib = model.visual.use_ops("onnxruntime")(*inputs)
    assert all(block.attn.contrib for block in model.visual.blocks)
    assert float((portable - contrib).abs().max()) <= 1e-6
    with pytest.raises(ValueError, match="vision ops 'fused'"):
        model.visual.use_ops("fused")


def test_defaults_and_the_bf16_refusal(tiny_checkpoint, tmp_path):
    assert ExportConfig(decoder_ops="onnxruntime").vision_ops == "onnxruntime"
    assert ExportConfig(decoder_ops="fused").vision_ops == ExportConfig().vision_ops == "portable"
    assert ExportConfig(decoder_ops="onnxruntime", vision_ops="portable").vision_ops == "portable"
    with pytest.raises(ConfigError, match="--vision-ops must be one of portable, onnxruntime"):
        ExportConfig(vision_ops="flash")
    out = tmp_path / "bf16"
    result = CliRunner().invoke(app, ["export", str(tiny_checkpoint), "--out", str(out), "--vision-ops", "onnxruntime",
                                      "--dtype", "bfloat16", "--no-validate"])
    assert result.exit_code == 2 and "no bfloat16 CPU kernel" in result.output and not out.exists()


@pytest.fixture(scope="module")
def vision_only_export(tiny_checkpoint, tmp_path_factory) -> Path:
    """A vision-only export of the ONNX Runtime vision flavour next to the default (portable) decoder ops."""
    from trt_pipeline.export.exporter import export

    out = tmp_path_factory.mktemp("vision") / "vision-onnxruntime"
    cfg = ExportConfig(components=("vision_encoder",), vision_ops="onnxruntime", max_image_tokens=64, validate=False)
    return export(tiny_checkpoint, out, cfg, show_progress=False)


def test_tensorrt_and_int8_refuse_the_vision_flavour(vision_only_export):
    from trt_pipeline.engine.builder import refuse_onnxruntime_flavour

    assert read_export_manifest(vision_only_export).decoder_ops == "portable"
    with pytest.raises(ConfigError, match="exported with `--vision-ops onnxruntime`") as caught:
        refuse_onnxruntime_flavour(vision_only_export)
    assert "--vision-ops portable" in caught.value.hint
    assert "--vision-ops portable" in tensorrt_hint(["MultiHeadAttention", "MatMul"])
    result = CliRunner().invoke(app, ["precision", "int8", str(vision_only_export)])
    assert result.exit_code == 2 and "has no INT8 variant" in result.output
    assert not (vision_only_export / "onnx" / "int8").exists()


def test_fp16_autocast_keeps_onnx_runtimes_attention(vision_only_export, tmp_path):
    """ModelOpt's AutoCast takes contrib ops for TensorRT plugins (and fails without TensorRT): it reads the
    graph with opset-23 Attention standing in, and the fp16 graph has MultiHeadAttention again."""
    from trt_pipeline.config import Fp16Config
    from trt_pipeline.quantize.precision import make_fp16

    out = Path(shutil.copytree(vision_only_export, tmp_path / "export"))
    make_fp16(out, Fp16Config(components=("vision_encoder",)), show_progress=False)
    fp16 = onnx_path(out, "fp16", "vision_encoder")
    ops = vision_ops_of(fp16)
    assert ops[("com.microsoft", "MultiHeadAttention")] == 2 and not ops[("", "Attention")]
    model = onnx.load(str(fp16), load_external_data=False)
    fp32 = onnx.load(str(onnx_path(out, "fp32", "vision_encoder")), load_external_data=False)
    opsets = {(o.domain, o.version) for o in model.opset_import}
    assert opsets >= {(o.domain, o.version) for o in fp32.opset_import} >= {("", 18), ("com.microsoft", 1)}
    assert not any(o.domain == "trt.plugins" for o in model.opset_import)  # the stand-in's opset 23 undone too
    accuracy = json.loads((out / "onnx" / "fp16" / "accuracy.json").read_text())
    assert accuracy["passed"]
    expected, got = features(out, (16, 16)), features(out, (16, 16), "fp16")
    assert cosine(got, expected) > 0.9999


def _attention_graph(folder: Path, external: bool) -> Path:
    """q, k, v [1, N, 2 * 8] -> one MultiHeadAttention (of projections whose weights are initializers)."""
    rng = np.random.default_rng(0)
    weights = [onnx.numpy_helper.from_array(rng.standard_normal((16, 16), dtype=np.float32), f"w{i}") for i in range(3)]
    nodes = [helper.make_node("MatMul", ["x", f"w{i}"], [name]) for i, name in enumerate("qkv")]
    nodes.append(helper.make_node("MultiHeadAttention", ["q", "k", "v"], ["y"], name="mha", domain="com.microsoft",
                                  num_heads=2, scale=0.3))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "N", 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)])
    path = folder / "attention.onnx"
    onnx.save(model, str(path), save_as_external_data=external, location="attention.onnx.data", size_threshold=0)
    return path


@pytest.mark.parametrize("external", [False, True])
def test_stand_ins_compute_the_same_and_turn_back(tmp_path, external):
    src = _attention_graph(tmp_path, external)
    x = np.random.default_rng(1).standard_normal((1, 7, 16), dtype=np.float32)

    def run(path: Path | bytes) -> np.ndarray:
        model = path if isinstance(path, bytes) else str(path)
        return ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]

    with standard_stand_ins(src) as (readable, restore):
        assert readable != src and sorted(p.name for p in tmp_path.iterdir()) == sorted(
            ["attention.onnx"] + (["attention.onnx.data"] if external else []))  # nothing written beside src
        stand_in = onnx.load(str(readable))
        assert [(n.op_type, n.domain) for n in stand_in.graph.node][-1] == ("Attention", "")
        assert float(np.abs(run(readable) - run(src)).max()) <= 1e-6
        back = restore(stand_in)
    node = back.graph.node[-1]
    assert (node.op_type, node.domain, node.name) == ("MultiHeadAttention", "com.microsoft", "mha")
    assert {a.name: helper.get_attribute_value(a) for a in node.attribute} == pytest.approx({"num_heads": 2, "scale": 0.3})
    assert [o.version for o in back.opset_import if o.domain == ""] == [18]
    assert float(np.abs(run(back.SerializeToString()) - run(src)).max()) == 0.0
    plain = tmp_path / "plain.onnx"
    onnx.save(helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])), str(plain))
    with standard_stand_ins(plain) as (readable, restore):  # nothing to stand in for: the graph as it is
        assert readable == plain and restore(back) is back


def test_the_disk_estimate_counts_the_chosen_components(tiny_checkpoint):
    from trt_pipeline.export.writer import estimated_bytes
    from trt_pipeline.models.glm4v.config import load_dims
    from trt_pipeline.models.glm4v.sizes import parameter_counts

    dims = load_dims(tiny_checkpoint)
    counts = parameter_counts(dims)
    vision, decoder = estimated_bytes(dims, 4, ("vision_encoder",)), estimated_bytes(dims, 4, ("decoder",))
    both = estimated_bytes(dims, 4)
    embed = counts["text_embed_tokens"] * 4 * 1.05
    assert vision == int((counts["text_embed_tokens"] + counts["vision_total"]) * 4 * 1.05)
    assert abs(vision + decoder - embed - both) <= 2 and vision < both and decoder < both
