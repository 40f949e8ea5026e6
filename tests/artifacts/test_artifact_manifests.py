"""export.json is read in one place: missing, empty, corrupt and stale manifests name the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trt_pipeline.artifacts import OutputLayout, read_export_manifest, write_json_atomic
from trt_pipeline.artifacts.manifests import EXPORT_FORMAT_VERSION
from trt_pipeline.config import DimRange
from trt_pipeline.engine.profiles import derive_profiles, eval_dim_expr
from trt_pipeline.errors import OnnxModelError
from trt_pipeline.export.dims import dims_to_json

DIMS = {"batch_size": DimRange(1, 1, 2), "num_image_tokens": DimRange(4, 34, 64),
        "num_patches": DimRange(16, 136, 256), "sequence_length": DimRange(1, 64, 96),
        "past_sequence_length": DimRange(0, 64, 128), "total_sequence_length": DimRange(1, 128, 224)}


def _export_folder(root: Path, **changes: object) -> Path:
    layout = OutputLayout(root)
    onnx = layout.onnx_path("fp32", "vision_encoder")
    onnx.parent.mkdir(parents=True)
    onnx.write_bytes(b"not really onnx")
    data = {
        "format_version": EXPORT_FORMAT_VERSION, "model_type": "glm4v", "opset": 18,
        "checkpoint": {"path": str(root / "ckpt"), "sha256": "0" * 64},
        "dims": dims_to_json(DIMS, spatial_merge_size=2),
        "components": {"vision_encoder": {
            "file": layout.rel(onnx), "sha256": "1" * 64,
            "inputs": [{"name": "pixel_values", "dtype": "float32", "shape": ["num_patches", 12]}],
            "outputs": [{"name": "image_features", "dtype": "float32", "shape": ["num_image_tokens", 8]}]}},
    }
    data.update(changes)
    write_json_atomic(layout.export_manifest, data)
    return root


def test_a_good_manifest_is_typed(tmp_path):
    manifest = read_export_manifest(_export_folder(tmp_path / "out"))
    assert manifest.checkpoint_path == tmp_path / "out" / "ckpt"
    assert manifest.dims["num_patches"].max == 256 and manifest.ranges["num_patches"] == DimRange(16, 136, 256)
    vision = manifest.component("vision_encoder")
    assert vision.path == OutputLayout(tmp_path / "out").onnx_path("fp32", "vision_encoder")
    assert [t.name for t in vision.inputs] == ["pixel_values"] and vision.inputs[0].shape == ("num_patches", 12)


def test_every_recorded_dim_expression_evaluates_to_its_range():
    """``num_patches / merge^2`` used to be written literally; eval_dim_expr could not evaluate it."""
    data = dims_to_json(DIMS, spatial_merge_size=2)
    assert data["num_image_tokens"]["expr"] == "num_patches / 4"
    for name, entry in data.items():
        if "expr" not in entry:
            continue
        for kind in ("min", "opt", "max"):
            values = {other: v[kind] for other, v in data.items() if "expr" not in v}
            assert eval_dim_expr(entry["expr"], values) == entry[kind], (name, kind)


def test_profiles_derive_when_the_image_token_dim_is_an_input(tmp_path):
    """A graph input shaped by ``num_image_tokens`` needs its expression evaluated (it is now)."""
    manifest = read_export_manifest(_export_folder(tmp_path / "out"))
    inputs = manifest.component("vision_encoder").outputs  # num_image_tokens-shaped, used here as an input
    (profile,) = derive_profiles("vision_encoder", inputs, manifest.dims)
    assert profile.shapes["image_features"].min == (4, 8) and profile.shapes["image_features"].max == (64, 8)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "not found"),
        ("", "is empty"),
        ("   \n", "is empty"),
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON list, expected an object"),
    ],
)
def test_unreadable_manifests_name_the_file(tmp_path, content, message):
    out = tmp_path / "out"
    out.mkdir()
    path = OutputLayout(out).export_manifest
    if content is not None:
        path.write_text(content)
    with pytest.raises(OnnxModelError, match=message) as info:
        read_export_manifest(out)
    assert str(path) in str(info.value) and info.value.exit_code == 3
    assert "autoglm-trt export" in str(info.value)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"format_version": 99}, "is stale: format_version 99"),
        ({"format_version": None}, "is stale"),
        ({"dims": {}}, "has no 'dims'"),
        ({"dims": {"batch_size": {"min": 4, "opt": 1, "max": 2}}}, "not 0 <= min <= opt <= max"),
        ({"dims": {"batch_size": {"min": "a", "opt": 1, "max": 2}}}, "needs integer min/opt/max"),
        ({"dims": {"batch_size": 3}}, "needs integer min/opt/max"),
        ({"components": {}}, "lists no components"),
        ({"components": {"decoder": {"sha256": "x"}}}, "has no 'file' entry"),
        ({"checkpoint": "somewhere"}, "'checkpoint' must be an object"),
    ],
)
def test_malformed_and_stale_manifests_name_the_file(tmp_path, changes, message):
    out = _export_folder(tmp_path / "out", **changes)
    with pytest.raises(OnnxModelError, match=message) as info:
        read_export_manifest(out)
    assert str(OutputLayout(out).export_manifest) in str(info.value)


def test_cli_reports_a_corrupt_manifest_without_traceback(tmp_path):
    from typer.testing import CliRunner

    from trt_pipeline.cli import app

    out = _export_folder(tmp_path / "out")
    OutputLayout(out).export_manifest.write_text(json.dumps({"format_version": 1})[:-3])
    result = CliRunner().invoke(app, ["validate", str(out)])
    assert result.exit_code == 3, result.output
    assert "not valid JSON" in result.output and "Traceback" not in result.output
