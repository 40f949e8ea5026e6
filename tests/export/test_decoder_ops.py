"""``export --decoder-ops fused``: opset-23 Attention / RotaryEmbedding / RMSNormalization in the decoder.

The fused graph must compute what the portable one computes (both are held to transformers by the
export's own validation, whose report is read here), be much smaller for ONNX Runtime, be recorded in
export.json, and be refused with a clear message where it cannot work (an opset below 23).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from trt_pipeline.config import ExportConfig
from trt_pipeline.errors import ConfigError
from trt_pipeline.runtime.onnxruntime_runner import session


def _ops(path: Path) -> Counter:
    model = onnx.load(str(path), load_external_data=False)
    return Counter(node.op_type for node in model.graph.node)


def _feed(sess, batch: int, new: int, past: int, pad: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random decoder inputs: ``new`` tokens after ``past`` cached ones, row 0 left-padded by ``pad``."""
    shapes = {i.name: i.shape for i in sess.get_inputs()}
    hidden = shapes["inputs_embeds"][2]
    kv_heads, head_dim = shapes["past_key_values.0.key"][1], shapes["past_key_values.0.key"][3]
    rotary = shapes["rope_cos"][2]
    mask = np.ones((batch, past + new), np.int64)
    mask[0, :pad] = 0
    angles = np.repeat(np.arange(past, past + new, dtype=np.float32)[None, :, None]
                       * rng.uniform(0.01, 1.0, rotary // 2).astype(np.float32), 2, axis=-1).repeat(batch, 0)
    feed = {"inputs_embeds": rng.standard_normal((batch, new, hidden)).astype(np.float32),
            "attention_mask": mask, "rope_cos": np.cos(angles), "rope_sin": np.sin(angles),
            "logits_positions": np.arange(new, dtype=np.int64)}
    for name in shapes:
        if name.startswith("past_key_values."):
            feed[name] = rng.standard_normal((batch, kv_heads, past, head_dim)).astype(np.float32)
    return feed


def test_fused_decoder_is_the_opset_23_ops_and_fewer_nodes(tiny_export: Path, tiny_fused_export: Path) -> None:
    portable = _ops(tiny_export / "onnx" / "fp32" / "decoder.onnx")
    fused = _ops(tiny_fused_export / "onnx" / "fp32" / "decoder.onnx")
    layers = json.loads((tiny_fused_export / "export.json").read_text())["checkpoint"]["dims"]["text"]["num_hidden_layers"]
    assert fused["Attention"] == layers and fused["RotaryEmbedding"] == 2 * layers  # queries and keys
    assert fused["RMSNormalization"] == 4 * layers + 1  # GLM's four norms a layer + the final one
    for spelled_out in ("Softmax", "Concat", "Transpose", "ReduceMean", "Sqrt"):
        assert fused[spelled_out] == 0, spelled_out  # all inside the fused ops
    assert "Attention" not in portable and portable["Softmax"] == layers
    assert sum(fused.values()) < 0.5 * sum(portable.values()), (sum(fused.values()), sum(portable.values()))
    model = onnx.load(str(tiny_fused_export / "onnx" / "fp32" / "decoder.onnx"), load_external_data=False)
    assert {o.version for o in model.opset_import if o.domain in ("", "ai.onnx")} == {23}


def test_fused_export_passed_its_validation_against_transformers(tiny_fused_export: Path) -> None:
    report = json.loads((tiny_fused_export / "reports" / "validation.json").read_text())
    assert report["passed"] and report["reference_dtype"] == "float32" and not report["failures"]
    assert len(report["results"]) >= 20  # the export's whole dim grid, not a spot check
    worst = report["worst_max_abs"]
    assert max(worst.values()) <= 1e-4, worst  # fp32 gate: the portable graph's tolerance, unchanged


@pytest.mark.parametrize(("batch", "new", "past", "pad"), [(1, 1, 64, 0), (2, 7, 0, 3), (2, 5, 9, 2), (1, 33, 90, 0)],
                         ids=["decode@64", "padded-prefill", "padded-chunk-on-cache", "chunk-33@90"])
def test_fused_and_portable_graphs_agree(tiny_export: Path, tiny_fused_export: Path,
                                         batch: int, new: int, past: int, pad: int) -> None:
    portable = session(tiny_export / "onnx" / "fp32" / "decoder.onnx", threads=1)
    fused = session(tiny_fused_export / "onnx" / "fp32" / "decoder.onnx", threads=1)
    feed = _feed(portable, batch, new, past, pad, np.random.default_rng(new + past))
    names = [o.name for o in portable.get_outputs()]
    assert names == [o.name for o in fused.get_outputs()]  # same I/O contract: runners, profiles, serve unchanged
    for name, a, b in zip(names, portable.run(None, feed), fused.run(None, feed)):
        assert a.shape == b.shape, name
        assert float(np.abs(a - b).max()) <= 1e-5, name


def test_export_json_records_the_flavour_and_where_it_parses(tiny_fused_export: Path) -> None:
    manifest = json.loads((tiny_fused_export / "export.json").read_text())
    assert manifest["decoder_graph"]["ops"] == "fused" and manifest["opset"] == 23
    assert manifest["config"]["decoder_ops"] == "fused"
    parse = manifest["tensorrt_parse"]
    assert parse["trt-10.15"]["parses"] and parse["trt-11"]["parses"]
    assert not parse["trt-10.3"]["parses"]
    assert set(parse["trt-10.3"]["unsupported"]["decoder"]) == {"Attention", "RotaryEmbedding", "RMSNormalization"}


def test_an_opset_below_23_is_refused_for_fused_ops() -> None:
    assert ExportConfig(decoder_ops="fused").opset == 23 and ExportConfig().opset == 18
    with pytest.raises(ConfigError, match=r"--opset 21 is too old for --decoder-ops fused"):
        ExportConfig(decoder_ops="fused", opset=21)
    with pytest.raises(ConfigError, match=r"--decoder-ops must be one of portable, fused"):
        ExportConfig(decoder_ops="genai")


def test_cli_refuses_fused_at_an_old_opset_before_writing(tiny_checkpoint: Path, tmp_path: Path) -> None:
    from trt_pipeline.cli.app import app

    out = tmp_path / "never"
    result = CliRunner().invoke(app, ["export", str(tiny_checkpoint), "--out", str(out), "--decoder-ops", "fused",
                                      "--opset", "18"])
    assert result.exit_code != 0
    assert "--opset 18 is too old for --decoder-ops fused" in result.output
    assert not out.exists()


def test_fused_fp16_export_is_refused_before_writing(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """ONNX Runtime's fp16 Attention/RotaryEmbedding miss the fp16 gate: refused, with the routes that work."""
    from trt_pipeline.export.exporter import export

    out = tmp_path / "fp16-fused"
    with pytest.raises(ConfigError, match=r"--decoder-ops fused with --dtype float16") as info:
        export(tiny_checkpoint, out, ExportConfig(decoder_ops="fused", dtype="float16"), show_progress=False)
    assert "precision fp16" in info.value.hint and "--decoder-ops portable" in info.value.hint
    assert not out.exists()


def test_int8_of_a_fused_export_is_refused_before_writing(tiny_fused_export: Path, tmp_path: Path) -> None:
    """ModelOpt's INT8 pass cannot infer shapes through the fused graph: refused, pointing at the portable export."""
    import shutil

    from trt_pipeline.config import Int8Config
    from trt_pipeline.quantize.precision import make_int8

    out = tmp_path / "fused"
    shutil.copytree(tiny_fused_export, out)
    with pytest.raises(ConfigError, match="--decoder-ops fused` export") as info:
        make_int8(out, Int8Config(calib_samples=2, evaluate=False), show_progress=False)
    assert "--decoder-ops portable" in info.value.hint
    assert not (out / "onnx" / "int8").exists()
    # the vision encoder alone (decoder kept fp32) is not the decoder's problem
    make_int8(out, Int8Config(calib_samples=2, evaluate=False, components={"vision_encoder": "int8", "decoder": "fp32"}),
              show_progress=False)
    assert (out / "onnx" / "int8" / "decoder.onnx").is_file()
