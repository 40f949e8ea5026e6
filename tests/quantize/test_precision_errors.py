"""Bad input to the precision stages: clear CalibrationError / AccuracyError, nothing half-written."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from trt_pipeline.config import Fp16Config, Int8Config
from trt_pipeline.errors import AccuracyError, CalibrationError, OnnxModelError
from trt_pipeline.quantize.dataset import default_root
from trt_pipeline.quantize.precision import make_fp16, make_int8

REPO_CALIB = default_root()


def _copy_export(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("fp16", "int8"))
    return dst


def _small_calibration(root: Path, n_calib: int = 3, n_heldout: int = 2) -> Path:
    """A calibration root with the first items of the repository's splits (images copied)."""
    for split, n in (("calib", n_calib), ("heldout", n_heldout)):
        lines = (REPO_CALIB / split / "prompts.jsonl").read_text(encoding="utf-8").splitlines()[:n]
        (root / split / "images").mkdir(parents=True)
        (root / split / "prompts.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        for src in (REPO_CALIB / split / "images").iterdir():
            if src.name in "".join(lines):
                shutil.copy2(src, root / split / "images" / src.name)
    return root


@pytest.fixture()
def export(tiny_export: Path, tmp_path: Path) -> Path:
    return _copy_export(tiny_export, tmp_path / "export")


def _no_variant(out: Path) -> None:
    onnx_dir = out / "onnx"
    assert sorted(p.name for p in onnx_dir.iterdir()) == ["fp32"], list(onnx_dir.iterdir())


def test_missing_calibration_folder(export: Path, tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match="does not exist") as info:
        make_int8(export, Int8Config(calib=tmp_path / "nowhere"), show_progress=False)
    assert "--calib" in str(info.value)
    _no_variant(export)


def test_empty_calibration_folder(export: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(CalibrationError, match="empty or not a calibration root"):
        make_fp16(export, Fp16Config(calib=tmp_path / "empty"), show_progress=False)
    _no_variant(export)


def test_empty_prompts_file(export: Path, tmp_path: Path) -> None:
    root = _small_calibration(tmp_path / "calibration")
    (root / "calib" / "prompts.jsonl").write_text("\n", encoding="utf-8")
    with pytest.raises(CalibrationError, match="is empty"):
        make_int8(export, Int8Config(calib=root), show_progress=False)
    _no_variant(export)


def test_missing_heldout_split(export: Path, tmp_path: Path) -> None:
    root = _small_calibration(tmp_path / "calibration")
    shutil.rmtree(root / "heldout")
    with pytest.raises(CalibrationError, match="held-out split"):
        make_fp16(export, Fp16Config(calib=root), show_progress=False)
    _no_variant(export)


def test_undecodable_image(export: Path, tmp_path: Path) -> None:
    root = _small_calibration(tmp_path / "calibration")
    image = next((root / "calib" / "images").iterdir())
    image.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(CalibrationError, match="cannot be decoded") as info:
        make_int8(export, Int8Config(calib=root, calib_samples=3), show_progress=False)
    assert image.name in str(info.value)
    _no_variant(export)


def test_out_of_range_inputs_leave_existing_variant_untouched(
    tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from trt_pipeline.config import ExportConfig
    from trt_pipeline.export.exporter import export as do_export

    out = do_export(tiny_checkpoint, tmp_path_factory.mktemp("narrow") / "export",
                    ExportConfig(max_seq=40, max_kv=40, max_image_tokens=16, validate=False, simplify=False),
                    show_progress=False)
    for make, cfg in ((make_fp16, Fp16Config(calib_samples=2)), (make_int8, Int8Config(calib_samples=2))):
        with pytest.raises(CalibrationError, match=r"calib-\d+.*outside the exported ranges.*num_patches in \[16, 64\]"):
            make(out, cfg, show_progress=False)
    _no_variant(out)
    # an existing variant is kept as it was when a new run fails
    sentinel = out / "onnx" / "int8" / "manifest.json"
    sentinel.parent.mkdir()
    sentinel.write_text("{}")
    with pytest.raises(CalibrationError):
        make_int8(out, Int8Config(calib_samples=2), show_progress=False)
    assert sentinel.read_text() == "{}" and sorted(p.name for p in (out / "onnx").iterdir()) == ["fp32", "int8"]


def test_not_an_export_folder(tmp_path: Path) -> None:
    with pytest.raises(OnnxModelError, match="not an export folder"):
        make_fp16(tmp_path, Fp16Config(), show_progress=False)


def test_accuracy_gate_failure_writes_report_then_raises(export: Path, tmp_path: Path) -> None:
    root = _small_calibration(tmp_path / "calibration")
    cfg = Int8Config(calib=root, calib_samples=3, heldout_samples=2, components={"decoder": "int8"},
                     min_cosine=0.9999999)
    with pytest.raises(AccuracyError, match=r"`logits` cosine_min 0\.\d+ \(needs >= 0\.9999999\)") as info:
        make_int8(export, cfg, show_progress=False)
    assert info.value.exit_code == 5
    report = (export / "onnx" / "int8" / "accuracy.json").read_text()
    assert '"passed": false' in report


def test_cli_exit_codes(export: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from trt_pipeline.cli import app

    result = CliRunner().invoke(app, ["precision", "int8", str(export), "--calib", str(tmp_path / "missing")])
    assert result.exit_code == 4
    assert "does not exist" in result.output
    result = CliRunner().invoke(app, ["precision", "int8", str(export), "--method", "median"])
    assert result.exit_code == 2 and "entropy, max, percentile" in result.output
    result = CliRunner().invoke(app, ["precision", "int8", str(export), "--vision-precision", "int4"])
    assert result.exit_code == 2
    _no_variant(export)


@pytest.fixture(scope="module")
def bf16_export(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bf16 export, as `export --dtype auto` writes the real 9B's (onnx/bf16, no onnx/fp32)."""
    from trt_pipeline.config import ExportConfig
    from trt_pipeline.export.exporter import export as run_export

    cfg = ExportConfig(dtype="bfloat16", streaming=True, max_batch=1, max_seq=16, max_kv=16, max_image_tokens=16,
                       validate=False)
    return run_export(tiny_checkpoint, tmp_path_factory.mktemp("bf16") / "export", cfg, show_progress=False)


@pytest.mark.parametrize("precision", ["fp16", "int8", "int4"])
def test_a_bf16_export_is_refused_with_the_export_to_make(bf16_export: Path, precision: str) -> None:
    from typer.testing import CliRunner

    from trt_pipeline.cli import app

    result = CliRunner().invoke(app, ["precision", precision, str(bf16_export)])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert f"is a bfloat16 export ({bf16_export / 'onnx' / 'bf16'}); `precision {precision}` starts from an fp32 export" in text
    assert "--dtype float32" in text and ("--dtype float16" in text) == (precision == "fp16")
    assert sorted(p.name for p in (bf16_export / "onnx").iterdir()) == ["bf16"]  # nothing written


def test_an_fp16_export_asked_for_fp16_is_told_it_is_fp16_already(export: Path) -> None:
    """The refusal reads export.json's dtype: an fp16 export asked for `precision fp16` has nothing to make."""
    import dataclasses
    import json

    from trt_pipeline.artifacts.manifests import read_export_manifest
    from trt_pipeline.errors import ConfigError
    from trt_pipeline.quantize.precision import refuse_half_export

    manifest = json.loads((export / "export.json").read_text())
    (export / "export.json").write_text(json.dumps({**manifest, "dtype": "float16", "precision": "fp16"}))
    with pytest.raises(ConfigError, match="already is fp16: build or bundle it as it is"):
        refuse_half_export(read_export_manifest(export), "fp16")
    with pytest.raises(ConfigError, match="--dtype float32"):
        refuse_half_export(read_export_manifest(export), "int4")
    refuse_half_export(dataclasses.replace(read_export_manifest(export), raw=manifest), "int4")  # fp32: accepted
