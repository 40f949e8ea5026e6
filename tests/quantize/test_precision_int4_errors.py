"""Bad input to ``precision int4``: opset below 21, block sizes that do not fit, unknown precision names,
AWQ that cannot run (RTN fallback, said and recorded); nothing half-written."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from trt_pipeline.config.int4 import Int4Config
from trt_pipeline.errors import ConfigError, OnnxModelError
from trt_pipeline.precisions import PRECISIONS, check_precision

FP32_DECODER = Path("onnx") / "fp32" / "decoder.onnx"


@pytest.fixture()
def export(tiny_export: Path, tmp_path: Path) -> Path:
    out = tmp_path / "export"
    shutil.copytree(tiny_export, out, ignore=shutil.ignore_patterns("fp16", "int8", "int4"))
    return out


def _one_feed(export: Path) -> list[dict[str, np.ndarray]]:
    from trt_pipeline.quantize.calibration_reader import CalibrationReader
    from trt_pipeline.quantize.dataset import load_split
    from trt_pipeline.quantize.precision import calibration_folders

    calib_dir, _ = calibration_folders(None)
    return CalibrationReader(export, load_split(calib_dir), 2).feeds("decoder")


@pytest.mark.parametrize("opset", [18, 20])
def test_an_opset_below_21_is_refused_naming_it_and_the_flag(opset: int) -> None:
    with pytest.raises(ConfigError, match=rf"--opset {opset} is below 21") as info:
        Int4Config(opset=opset)
    assert "block_size" in str(info.value) and "--opset 21" in str(info.value)


def test_an_export_that_cannot_be_upgraded_to_opset_21_is_refused(export: Path, monkeypatch) -> None:
    from trt_pipeline.quantize.precision import make_int4

    def fail(model, version):
        raise RuntimeError("No Adapter For Reshape")

    monkeypatch.setattr(onnx.version_converter, "convert_version", fail)
    with pytest.raises(OnnxModelError, match="is opset 18 and onnx cannot upgrade it to opset 21") as info:
        make_int4(export, Int4Config(calib_samples=2, heldout_samples=1), show_progress=False)
    assert "autoglm-trt export" in info.value.hint and "--opset 21" in info.value.hint
    assert sorted(p.name for p in (export / "onnx").iterdir()) == ["fp32"]  # no partial onnx/int4


def test_an_upgrade_that_changes_the_outputs_is_refused(export: Path, tmp_path: Path, monkeypatch) -> None:
    from trt_pipeline.quantize.int4 import prepare_graph

    real = onnx.version_converter.convert_version

    def wrong(model, version):  # an upgrade that silently breaks a weight
        upgraded = real(model, version)
        weight = next(t for t in upgraded.graph.initializer if len(t.dims) == 2)
        weight.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(weight) * 2, weight.name))
        return upgraded

    monkeypatch.setattr(onnx.version_converter, "convert_version", wrong)
    with pytest.raises(OnnxModelError, match="computes another"):
        prepare_graph(export / FP32_DECODER, tmp_path / "up.onnx", 21, _one_feed(export)[0])


def test_block_size_must_be_a_power_of_two_of_at_least_16() -> None:
    for bad in (8, 96, 100):
        with pytest.raises(ConfigError, match=f"--block-size {bad} must be a power of two >= 16"):
            Int4Config(block_size=bad)


def test_a_block_size_that_does_not_divide_k_names_the_matrix_and_one_that_fits(export: Path) -> None:
    from trt_pipeline.quantize.int4 import quantize_int4_file, weight_matmuls

    feeds = [{"unused": np.zeros(1)}]  # refused before any model runs
    with pytest.raises(ConfigError, match=r"--block-size 256 does not divide the reduction dim K=128") as info:
        quantize_int4_file(export / FP32_DECODER, export / "x.onnx", feeds, block_size=256)
    assert "--block-size 128" in info.value.hint
    vision = export / "onnx" / "fp32" / "vision_encoder.onnx"  # patch embedding: K = 3 x 2 x 14 x 14 = 1176
    patch_embedding = [f"{m.name}$" for m in weight_matmuls(onnx.load(str(vision))) if m.k == 1176]
    assert len(patch_embedding) == 1
    with pytest.raises(ConfigError, match=r"--block-size 64 does not divide the reduction dim K=1176") as info:
        quantize_int4_file(vision, export / "x.onnx", feeds, block_size=64)
    assert "no power-of-two block size" in info.value.hint and "--exclude-nodes" in info.value.hint
    with pytest.raises(ConfigError, match=r"--block-size 128 does not divide the reduction dim K=64") as info:
        quantize_int4_file(vision, export / "x.onnx", feeds, block_size=128, nodes_to_exclude=patch_embedding)
    assert "--block-size 64" in info.value.hint  # the 64-wide tiny vision tower
    assert not (export / "x.onnx").exists()


def test_unknown_precision_names_list_the_valid_names() -> None:
    from trt_pipeline.bench.backends import parse_backend
    from trt_pipeline.config import CompareConfig
    from trt_pipeline.engine.options import BuildConfig

    with pytest.raises(ConfigError, match="unknown precision 'int3'; valid names: fp32, fp16, int8, int4"):
        check_precision("int3")
    with pytest.raises(ConfigError, match="valid names: fp32, fp16, int8, int4"):
        CompareConfig(precisions=("int3",))
    with pytest.raises(ConfigError, match="valid names: fp32, fp16, int8, int4"):
        BuildConfig(out_dir=Path("."), precision="int3")
    with pytest.raises(ConfigError, match="ort-int4"):
        parse_backend("ort-int3")
    with pytest.raises(ConfigError, match="decoder precision in the int4 folder 'int8' is not available here; valid names: fp32, fp16, int4"):
        Int4Config(components={"decoder": "int8"})
    assert PRECISIONS == ("fp32", "fp16", "int8", "int4")


def test_cli_precision_with_an_unknown_name_lists_the_valid_names(tmp_path: Path) -> None:
    from trt_pipeline.cli.app import app

    result = CliRunner().invoke(app, ["precision", "int3", str(tmp_path)])
    assert result.exit_code == 2
    assert "unknown precision 'int3'; valid names: fp16, int8, int4" in result.output


def test_awq_without_prefill_feeds_falls_back_to_rtn_and_says_why(export: Path, tmp_path: Path, capsys) -> None:
    from trt_pipeline.artifacts.manifests import read_export_manifest
    from trt_pipeline.quantize.int4 import quantize_int4_file

    feeds = _one_feed(export)
    decode_only = [f for f in feeds if f["past_key_values.0.key"].shape[2] > 0]
    assert decode_only and len(decode_only) < len(feeds)
    inputs = read_export_manifest(export).components["decoder"].inputs
    report = quantize_int4_file(export / FP32_DECODER, tmp_path / "decoder.onnx", decode_only, inputs=inputs,
                                method="awq", activations="fp32")
    assert report.method == "awq" and report.method_used == "rtn" and report.modelopt_method == "rtn_dq"
    assert report.fallback_reason == "no prefill calibration feed (AWQ needs prompt activations)"
    assert report.awq_calibration == {"feeds": 0, "tokens_per_feed": 0, "feeds_given": len(decode_only)}
    assert len(report.nodes_quantized) == 12
    assert "falling back to rtn" in capsys.readouterr().err
