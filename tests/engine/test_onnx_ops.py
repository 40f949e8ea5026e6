"""Every op of every exported graph is parsed by every TensorRT target (``trt_pipeline.engine.onnx_ops``).

The table's source (onnx-tensorrt ``docs/operators.md`` per release branch) is named in that
module's docstring. The graphs checked are the real exports of the tiny checkpoint: fp32 from
``export``, fp16 (AutoCast) and int8 (Q/DQ) from the precision stages, vision encoder and decoder
each, plus int4 when the precision stage offers it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from trt_pipeline.engine.onnx_ops import TARGETS, check_model, parse_report


def _with_variants(export: Path, out: Path, int8: bool = True) -> Path:
    """A copy of ``export`` with its fp16 (and, ``int8``, int8) variants and int4."""
    from trt_pipeline.config import Fp16Config, Int8Config
    from trt_pipeline.quantize import precision

    shutil.copytree(export, out)
    precision.make_fp16(out, Fp16Config(calib_samples=2, evaluate=False), show_progress=False)
    if int8:
        precision.make_int8(out, Int8Config(calib_samples=2, evaluate=False), show_progress=False)
    make_int4 = getattr(precision, "make_int4", None)
    if make_int4 is not None:  # the int4 stage lands separately; checked as soon as it exists
        from trt_pipeline import config

        make_int4(out, config.Int4Config(calib_samples=2, evaluate=False), show_progress=False)
    return out


@pytest.fixture(scope="module")
def variants(tiny_export: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny (portable) export with its fp16, int8 and int4 variants."""
    return _with_variants(tiny_export, tmp_path_factory.mktemp("onnx-ops") / "export")


@pytest.fixture(scope="module")
def fused_variants(tiny_fused_export: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny ``--decoder-ops fused`` export with its fp16 and int4 variants (int8 is refused for fused)."""
    return _with_variants(tiny_fused_export, tmp_path_factory.mktemp("onnx-ops-fused") / "export", int8=False)


def test_every_op_of_every_exported_graph_parses_on_every_target(variants: Path) -> None:
    files = sorted((variants / "onnx").glob("*/*.onnx"))
    by_precision: dict[str, set[str]] = {}
    for file in files:
        by_precision.setdefault(file.parent.name, set()).add(file.stem)
    assert {"fp32", "fp16", "int8"} <= set(by_precision)
    assert all(stems == {"vision_encoder", "decoder"} for stems in by_precision.values()), by_precision
    checks = [check for file in files for check in check_model(file)]
    assert len(checks) == len(files) * len(TARGETS)
    # INT4's block-quantized DequantizeLinear needs opset 21: TensorRT 10.3 (JetPack 6) documents opset
    # <= 20, so int4 is for the newer targets only (bundle refuses it for 10.3, see the test below)
    int4_on_old = [c for c in checks if "/int4/" in c.path and TARGETS[c.target].max_opset < 21]
    assert all(c.opset_too_new and not c.unsupported for c in int4_on_old if c.path.endswith("decoder.onnx"))
    failures = [check.describe() for check in checks if not check and check not in int4_on_old]
    assert not failures, failures
    int8_decoder = next(c for c in checks if c.path.endswith("int8/decoder.onnx"))
    assert int8_decoder.op_counts.get("DequantizeLinear", 0) > 0  # the Q/DQ graph was really checked


FUSED_OPS = {"Attention", "RotaryEmbedding", "RMSNormalization"}


def test_fused_graphs_parse_on_tensorrt_10_15_and_11_and_name_their_ops_for_10_3(fused_variants: Path) -> None:
    """Every precision made from a fused export keeps the opset-23 ops (AutoCast and Q/DQ pass them
    through) and only those stop JetPack 6's TensorRT 10.3; the newer targets take every op."""
    files = sorted((fused_variants / "onnx").glob("*/decoder.onnx"))
    assert {f.parent.name for f in files} == {"fp32", "fp16", "int4"}
    for file in files:
        checks = {check.target: check for check in check_model(file)}
        assert checks["trt-10.15"] and checks["trt-11"], [c.describe() for c in checks.values() if not c]
        old = checks["trt-10.3"]
        assert not old and old.opset_too_new and set(old.unsupported) == FUSED_OPS, old.describe()
        assert old.op_counts["Attention"] > 0


def test_decoder_graph_has_no_kv_expand(tiny_export: Path) -> None:
    """GQA by grouping queries: no Expand (the old per-query-head K/V copies), one Concat per K and V."""
    decoder = onnx.load(str(tiny_export / "onnx" / "fp32" / "decoder.onnx"), load_external_data=False)
    ops = [node.op_type for node in decoder.graph.node]
    assert "Expand" not in ops
    assert "Reciprocal" not in ops  # RMSNorm divides by the root (the pattern ONNX Runtime fuses)


def test_export_json_records_parse_report_and_graph_choices(tiny_export: Path) -> None:
    manifest = json.loads((tiny_export / "export.json").read_text())
    assert set(manifest["tensorrt_parse"]) == set(TARGETS)
    assert all(entry["parses"] and not entry["unsupported"] for entry in manifest["tensorrt_parse"].values())
    assert manifest["decoder_graph"]["kv_cache"] == "concat"


def _one_node_model(path: Path, op: str, opset: int, domain: str = "") -> Path:
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])]
    node_inputs = ["x"]
    if op == "RMSNormalization":
        inputs.append(helper.make_tensor_value_info("scale", TensorProto.FLOAT, [4]))
        node_inputs.append("scale")
    graph = helper.make_graph([helper.make_node(op, node_inputs, ["y"], domain=domain)], "g", inputs,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])])
    imports = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    onnx.save(helper.make_model(graph, opset_imports=imports), str(path))
    return path


def test_the_table_refuses_what_a_target_cannot_parse(tmp_path: Path) -> None:
    """RMSNormalization (opset 23) parses from TensorRT 10.15 on, not on JetPack 6's 10.3; contrib ops nowhere."""
    rms = {c.target: c for c in check_model(_one_node_model(tmp_path / "rms.onnx", "RMSNormalization", 23))}
    assert not rms["trt-10.3"] and rms["trt-10.3"].unsupported == {"RMSNormalization": 1}
    assert rms["trt-10.3"].opset_too_new
    assert rms["trt-10.15"] and rms["trt-11"]
    contrib = _one_node_model(tmp_path / "contrib.onnx", "FusedMatMul", 18, domain="com.microsoft")
    assert not any(check_model(contrib))
    report = parse_report({"decoder": contrib})
    assert report["trt-11"]["unsupported"] == {"decoder": {"com.microsoft:FusedMatMul": 1}}


@pytest.mark.parametrize(("fixture", "precision", "refusal"), [
    # INT4's block-quantized DequantizeLinear needs opset 21 (JetPack 6's TensorRT 10.3 documents <= 20)
    ("variants", "int4", r"int4/decoder.onnx: trt-10.3 cannot parse opset 21 > 20"),
    # a fused export's opset-23 Attention/RotaryEmbedding/RMSNormalization, whatever the precision
    ("fused_variants", "fp16", r"fp16/decoder.onnx: trt-10.3 cannot parse .*Attention"),
])
def test_bundle_refuses_a_variant_the_targets_tensorrt_cannot_parse(
    fixture: str, precision: str, refusal: str, request: pytest.FixtureRequest, tmp_path: Path,
) -> None:
    from trt_pipeline.bundle.make import make_bundle
    from trt_pipeline.errors import ConfigError

    export = request.getfixturevalue(fixture)
    dest = tmp_path / f"jp6-{precision}"
    with pytest.raises(ConfigError, match=refusal):
        make_bundle(export, "jetson-orin-jp6", dest, precision=precision)
    assert not dest.exists() and not dest.with_name(f"jp6-{precision}.tar").exists()
    bundle = make_bundle(export, "x86-trt11", tmp_path / f"trt11-{precision}", precision=precision)
    assert (bundle.path / "build.sh").is_file()
