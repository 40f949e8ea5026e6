"""Option parsing and validation: workspace, shapes, precision, opt level, hardware compat, legacy flags."""

from __future__ import annotations

import shutil

import pytest

from trt_pipeline.engine.options import (
    BuildConfig,
    parse_shapes,
    parse_workspace,
    resolve_build_inputs,
    resolve_precision,
    validate_for_tensorrt,
)
from trt_pipeline.engine.tensorrt_import import GpuInfo, detect_shim
from trt_pipeline.errors import ConfigError, OnnxModelError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4GiB", 4 << 30),
        ("512MiB", 512 << 20),
        ("512mib", 512 << 20),
        ("2G", 2 << 30),
        ("1.5GiB", int(1.5 * (1 << 30))),
        ("4096M", 4096 << 20),
        ("4", 4 << 30),  # Ultralytics: a plain number is GiB
        ("1GB", 10**9),
        ("64 KiB", 64 << 10),
        (None, None),
    ],
)
def test_parse_workspace(text, expected):
    assert parse_workspace(text) == expected


@pytest.mark.parametrize("text", ["four", "4XB", "-1GiB", "0", "0MiB", "GiB", "1e3MiB"])
def test_parse_workspace_rejects(text):
    with pytest.raises(ConfigError, match="--workspace"):
        parse_workspace(text)


def test_parse_shapes_trtexec_syntax():
    assert parse_shapes("inputs_embeds:1x128x4096, past_key_values.0.key:1x2x0x128,'attention_mask':1x128") == {
        "inputs_embeds": (1, 128, 4096),
        "past_key_values.0.key": (1, 2, 0, 128),
        "attention_mask": (1, 128),
    }
    assert parse_shapes(None) == {} and parse_shapes("  ") == {}


@pytest.mark.parametrize("text", ["inputs_embeds", "inputs_embeds:1x", "inputs_embeds:1*2", ":1x2", "a:1x2,a:1x3", "a:1x-2"])
def test_parse_shapes_rejects(text):
    with pytest.raises(ConfigError, match="--min-shapes"):
        parse_shapes(text, option="--min-shapes")


def test_precision_flags_are_exclusive_and_default_to_fp32():
    assert resolve_precision() == "fp32"
    assert resolve_precision(fp16=True) == "fp16"
    assert resolve_precision(int8=True) == "int8"
    with pytest.raises(ConfigError, match="--fp16 and --int8"):
        resolve_precision(fp16=True, int8=True)


@pytest.mark.parametrize("level", [-1, 6, 2.5, True, "3"])
def test_opt_level_must_be_0_to_5(tmp_path, level):
    with pytest.raises(ConfigError, match="--opt-level"):
        BuildConfig(tmp_path, opt_level=level)


def test_config_validation(tmp_path):
    with pytest.raises(ConfigError, match="--hardware-compat 'turing\\+'"):
        BuildConfig(tmp_path, hardware_compat="turing+")
    with pytest.raises(ConfigError, match="needs --fp16 or --int8"):
        BuildConfig(tmp_path, legacy_precision_flags=True)
    with pytest.raises(ConfigError, match="precision 'bf16'"):
        BuildConfig(tmp_path, precision="bf16")
    with pytest.raises(ConfigError, match="is a folder"):
        BuildConfig(tmp_path, timing_cache=tmp_path)
    with pytest.raises(ConfigError, match="--workspace"):
        BuildConfig(tmp_path, workspace=0)


def test_config_paths_and_from_options(tmp_path):
    cfg = BuildConfig.from_options(
        tmp_path, fp16=True, workspace="4GiB", opt_level=5, min_shapes="inputs_embeds:1x1x8",
        max_shapes="inputs_embeds:2x64x8", hardware_compat="ampere+", version_compatible=True,
    )
    assert cfg.precision == "fp16" and cfg.workspace == 4 << 30 and cfg.opt_level == 5
    assert cfg.engine_path("decoder") == tmp_path / "engines" / "decoder.fp16.engine"
    assert cfg.timing_cache_path == tmp_path / "engines" / "timing.cache"
    assert cfg.shapes.min == {"inputs_embeds": (1, 1, 8)} and cfg.shapes.max == {"inputs_embeds": (2, 64, 8)}
    assert cfg.onnx_precision == "fp16" and cfg.strongly_typed
    legacy = BuildConfig.from_options(tmp_path, int8=True, legacy_precision_flags=True, timing_cache=tmp_path / "t.cache")
    assert legacy.onnx_precision == "fp32" and not legacy.strongly_typed
    assert legacy.timing_cache_path == tmp_path / "t.cache"
    assert cfg.to_json()["shapes"]["max"] == {"inputs_embeds": [2, 64, 8]}


def test_resolve_build_inputs_finds_the_precision_variant(export_dir):
    inputs = resolve_build_inputs(BuildConfig(export_dir, precision="fp16"))
    assert inputs.precision_dir == export_dir / "onnx" / "fp16"
    assert set(inputs.components) == {"vision_encoder", "decoder"}
    assert inputs.components["decoder"].onnx_path == export_dir / "onnx" / "fp16" / "decoder.onnx"
    assert inputs.dims["total_sequence_length"].expr
    assert inputs.calibration_cache is None


def test_missing_export_and_precision_folders_are_explained(tmp_path, make_export_dir):
    with pytest.raises(ConfigError, match="export.json is missing") as info:
        resolve_build_inputs(BuildConfig(tmp_path, precision="fp16"))
    assert "autoglm-trt export" in str(info.value)

    only_fp32 = make_export_dir(precisions=("fp32",))
    with pytest.raises(ConfigError, match="--int8 needs the int8 ONNX variant") as info:
        resolve_build_inputs(BuildConfig(only_fp32, precision="int8"))
    assert "onnx/int8" in str(info.value)


def test_component_file_listed_but_missing(export_dir):
    (export_dir / "onnx" / "fp16" / "decoder.onnx").unlink()
    with pytest.raises(OnnxModelError, match="decoder.onnx is missing"):
        resolve_build_inputs(BuildConfig(export_dir, precision="fp16"))


def test_external_data_must_be_present(make_export_dir):
    out = make_export_dir(external_data=True)
    resolve_build_inputs(BuildConfig(out, precision="fp16"))
    (out / "onnx" / "fp16" / "decoder.onnx.data").unlink()
    with pytest.raises(OnnxModelError, match="external weights of decoder.onnx"):
        resolve_build_inputs(BuildConfig(out, precision="fp16"))


def test_legacy_path_uses_fp32_onnx_and_needs_the_calibration_cache(make_export_dir):
    out = make_export_dir()
    inputs = resolve_build_inputs(BuildConfig(out, precision="int8", legacy_precision_flags=True))
    assert inputs.precision_dir == out / "onnx" / "fp32"
    assert inputs.calibration_cache == out / "onnx" / "int8" / "calibration.cache"
    no_cache = make_export_dir(calibration_cache=False)
    with pytest.raises(ConfigError, match="calibration.cache"):
        resolve_build_inputs(BuildConfig(no_cache, precision="int8", legacy_precision_flags=True))
    # legacy fp16 only needs the fp32 folder
    shutil.rmtree(out / "onnx" / "fp16")
    resolve_build_inputs(BuildConfig(out, precision="fp16", legacy_precision_flags=True))


def test_unknown_component(export_dir):
    with pytest.raises(ConfigError, match="unknown component"):
        resolve_build_inputs(BuildConfig(export_dir, components=("audio",)))


GPU_4090 = GpuInfo("NVIDIA GeForce RTX 4090", "8.9", "12.8")
GPU_T4 = GpuInfo("Tesla T4", "7.5", "12.2")


def test_legacy_flags_are_refused_on_tensorrt_11(tmp_path, fakes):
    # the real 11.4 bindings: BuilderFlag has no FP16/INT8 members
    assert "FP16" not in fakes.lean.BuilderFlag.__members__ and "INT8" not in fakes.lean.BuilderFlag.__members__
    shim = detect_shim(fakes.lean)
    cfg = BuildConfig(tmp_path, precision="fp16", legacy_precision_flags=True)
    with pytest.raises(ConfigError, match="not available on TensorRT 11.4.0.106") as info:
        validate_for_tensorrt(cfg, shim, GPU_4090, jetson=False)
    assert "TensorRT 10.x (JetPack 6)" in str(info.value)


def test_legacy_flags_are_accepted_on_tensorrt_10(tmp_path, fake_trt_factory):
    shim = detect_shim(fake_trt_factory("10.3.0.30"))
    assert shim.legacy_precision_flags
    validate_for_tensorrt(BuildConfig(tmp_path, precision="int8", legacy_precision_flags=True), shim, GPU_4090, jetson=True)


def test_legacy_capability_needs_the_flag_members_not_just_the_version(tmp_path, fake_trt_factory, fakes):
    trt = fake_trt_factory("10.8.0.43")
    trt.BuilderFlag = fakes.lean.BuilderFlag  # a 10.x build whose enum lacks FP16/INT8
    shim = detect_shim(trt)
    assert not shim.legacy_precision_flags
    with pytest.raises(ConfigError, match="needs BuilderFlag.FP16 and BuilderFlag.INT8"):
        validate_for_tensorrt(BuildConfig(tmp_path, precision="fp16", legacy_precision_flags=True), shim, GPU_4090, jetson=False)


def test_hardware_compat_checks(tmp_path, fakes, fake_trt_factory):
    shim = detect_shim(fakes.lean)
    validate_for_tensorrt(BuildConfig(tmp_path, hardware_compat="ampere+"), shim, GPU_4090, jetson=False)
    validate_for_tensorrt(BuildConfig(tmp_path, hardware_compat="same-cc"), shim, GPU_T4, jetson=False)
    with pytest.raises(ConfigError, match="Ampere or newer GPU.*Tesla T4 \\(compute capability 7.5\\)"):
        validate_for_tensorrt(BuildConfig(tmp_path, hardware_compat="ampere+"), shim, GPU_T4, jetson=False)
    with pytest.raises(ConfigError, match="not supported on Jetson"):
        validate_for_tensorrt(BuildConfig(tmp_path, hardware_compat="ampere+"), shim, GPU_4090, jetson=True)
    old = fake_trt_factory("10.3.0.30")
    old.HardwareCompatibilityLevel = type("HardwareCompatibilityLevel", (), {"__members__": {"NONE": 0, "AMPERE_PLUS": 1}})
    with pytest.raises(ConfigError, match="same-cc is not available in TensorRT 10.3.0.30"):
        validate_for_tensorrt(BuildConfig(tmp_path, hardware_compat="same-cc"), detect_shim(old), GPU_4090, jetson=False)


def test_component_calibration_cache_is_preferred(tmp_path):
    from trt_pipeline.engine.builder import component_calibration_cache

    shared = tmp_path / "calibration.cache"
    shared.write_text("TRT-100300-EntropyCalibration2\n")
    assert component_calibration_cache(shared, "decoder") == shared
    own = tmp_path / "decoder.calibration.cache"
    own.write_text("TRT-100300-EntropyCalibration2\nmatmul: 3c000000\n")
    assert component_calibration_cache(shared, "decoder") == own
    assert component_calibration_cache(shared, "vision_encoder") == shared
    assert component_calibration_cache(None, "decoder") is None
