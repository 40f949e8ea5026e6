"""Engine manifest: write/read, and the compatibility rules applied before deserializing."""

from __future__ import annotations

import dataclasses
import json

import pytest

from trt_pipeline.artifacts import sha256_file
from trt_pipeline.engine.manifest import (
    EngineManifest,
    check_compatible,
    manifest_path_for,
    read_manifest,
    verify_engine_file,
    write_manifest,
)
from trt_pipeline.engine.profiles import Profile, ShapeRange
from trt_pipeline.engine.tensorrt_import import GpuInfo, TensorRTVersion
from trt_pipeline.errors import EngineCompatibilityError

ORIN = GpuInfo("Orin (nvgpu)", "8.7", "12.6", integrated=True)
RTX_4090 = GpuInfo("NVIDIA GeForce RTX 4090", "8.9", "12.8")
L40S = GpuInfo("NVIDIA L40S", "8.9", "12.8")
RTX_3090 = GpuInfo("NVIDIA GeForce RTX 3090", "8.6", "12.8")
T4 = GpuInfo("Tesla T4", "7.5", "12.8")


def make_manifest(**changes) -> EngineManifest:
    base = EngineManifest(
        component="decoder",
        precision="fp16",
        engine_file="decoder.fp16.engine",
        engine_sha256="0" * 64,
        engine_size=123,
        onnx_file="onnx/fp16/decoder.onnx",
        onnx_sha256="1" * 64,
        tensorrt_version="10.3.0.30",
        gpu_name=ORIN.name,
        compute_capability=ORIN.compute_capability,
        cuda_version="12.6",
        profiles=(
            Profile("prefill", {"inputs_embeds": ShapeRange((1, 1, 8), (1, 64, 8), (1, 128, 8))}),
            Profile("decode", {"inputs_embeds": ShapeRange((1, 1, 8), (1, 1, 8), (1, 1, 8))}),
        ),
        builder_flags=("VERSION_COMPATIBLE",),
        io=({"name": "inputs_embeds", "mode": "input", "dtype": "float32", "shape": ["batch_size", "sequence_length", 8]},),
        tool_versions={"tensorrt": "10.3.0.30"},
    )
    return dataclasses.replace(base, **changes)


def test_write_read_round_trip(tmp_path):
    engine = tmp_path / "engines" / "decoder.fp16.engine"
    engine.parent.mkdir()
    manifest = make_manifest()
    path = write_manifest(manifest, engine)
    assert path == manifest_path_for(engine) == tmp_path / "engines" / "decoder.fp16.engine.json"
    data = json.loads(path.read_text())
    assert data["format_version"] == 1
    for key in ("tensorrt_version", "gpu_name", "compute_capability", "cuda_version", "precision", "profiles",
                "builder_flags", "hardware_compat", "version_compatible", "onnx_sha256", "engine_sha256"):
        assert key in data
    assert data["profiles"][0] == {"name": "prefill", "shapes": {"inputs_embeds": {"min": [1, 1, 8], "opt": [1, 64, 8], "max": [1, 128, 8]}}}
    assert read_manifest(engine) == manifest


def test_missing_or_corrupt_manifest_is_refused(tmp_path):
    engine = tmp_path / "engines" / "vision_encoder.int8.engine"
    engine.parent.mkdir()
    engine.write_bytes(b"plan")
    with pytest.raises(EngineCompatibilityError, match="has no manifest") as info:
        read_manifest(engine)
    assert f"autoglm-trt build {tmp_path} --int8" in str(info.value)
    manifest_path_for(engine).write_text("{not json")
    with pytest.raises(EngineCompatibilityError, match="cannot read engine manifest"):
        read_manifest(engine)
    manifest_path_for(engine).write_text(json.dumps({**make_manifest().to_json(), "format_version": 99}))
    with pytest.raises(EngineCompatibilityError, match="format_version 99"):
        read_manifest(engine)


def test_exact_match_loads():
    assert check_compatible(make_manifest(), "10.3.0.30", ORIN) == []


def test_other_tensorrt_release_is_refused_with_a_full_message(tmp_path):
    engine = tmp_path / "jetson" / "engines" / "decoder.fp16.engine"
    with pytest.raises(EngineCompatibilityError) as info:
        check_compatible(make_manifest(), TensorRTVersion.parse("10.3.1.0"), ORIN, engine_path=engine)
    text = str(info.value)
    assert str(engine) in text  # names the engine file
    assert "built with TensorRT 10.3.0.30 on Orin (nvgpu) (compute capability 8.7" in text  # what it was built with
    assert "this machine has TensorRT 10.3.1.0 on Orin (nvgpu)" in text  # what is here
    assert f"autoglm-trt build {tmp_path / 'jetson'} --fp16" in text  # what to do


def test_build_number_matters_when_both_are_known():
    with pytest.raises(EngineCompatibilityError, match="versions differ"):
        check_compatible(make_manifest(), "10.3.0.26", ORIN)
    assert check_compatible(make_manifest(tensorrt_version="10.3.0"), "10.3.0.26", ORIN) == []


@pytest.mark.parametrize(
    ("built", "local", "ok"),
    [
        ("10.3.0.30", "10.8.0.43", True),  # newer minor, same major
        ("10.8.0.43", "10.3.0.30", False),  # older runtime
        ("10.13.0.35", "11.4.1.0", True),  # 10 -> 11 is supported
        ("11.4.0.106", "12.0.0.1", False),  # not listed
        ("8.6.1.6", "10.3.0.30", True),
        ("8.6.1.6", "11.4.1.0", False),
    ],
)
def test_version_compatible_engines(built, local, ok):
    manifest = make_manifest(tensorrt_version=built, version_compatible=True)
    if ok:
        assert check_compatible(manifest, local, ORIN) == []
    else:
        with pytest.raises(EngineCompatibilityError):
            check_compatible(manifest, local, ORIN)


def test_other_gpu_architecture_is_refused():
    manifest = make_manifest(tensorrt_version="11.4.1.0", gpu_name=RTX_3090.name, compute_capability="8.6")
    with pytest.raises(EngineCompatibilityError, match=r"compute capability differs \(8.6 vs 8.9\).*not hardware-compatible"):
        check_compatible(manifest, "11.4.1.0", RTX_4090)


def test_same_compute_capability_other_model_loads_with_a_warning():
    manifest = make_manifest(tensorrt_version="11.4.1.0", gpu_name=RTX_4090.name, compute_capability="8.9", cuda_version="12.8")
    warnings = check_compatible(manifest, "11.4.1.0", L40S)
    assert len(warnings) == 1 and "NVIDIA L40S" in warnings[0]


def test_hardware_compatible_engines():
    ampere = make_manifest(tensorrt_version="11.4.1.0", gpu_name=RTX_3090.name, compute_capability="8.6", hardware_compat="ampere+")
    assert check_compatible(ampere, "11.4.1.0", RTX_4090)  # loads (warning: other GPU)
    with pytest.raises(EngineCompatibilityError, match="needs compute capability >= 8.0"):
        check_compatible(ampere, "11.4.1.0", T4)
    same_cc = make_manifest(tensorrt_version="11.4.1.0", gpu_name=RTX_4090.name, compute_capability="8.9", hardware_compat="same-cc")
    assert check_compatible(same_cc, "11.4.1.0", L40S)
    with pytest.raises(EngineCompatibilityError, match="same compute capability only"):
        check_compatible(same_cc, "11.4.1.0", RTX_3090)


def test_cuda_major_change_is_a_warning():
    manifest = make_manifest(tensorrt_version="11.4.1.0", gpu_name=RTX_4090.name, compute_capability="8.9", cuda_version="12.8")
    warnings = check_compatible(manifest, "11.4.1.0", dataclasses.replace(RTX_4090, cuda_version="13.0"))
    assert any("CUDA 12.8" in w for w in warnings)


def test_engine_file_must_match_its_manifest(tmp_path):
    engine = tmp_path / "decoder.fp16.engine"
    engine.write_bytes(b"plan-v1")
    manifest = make_manifest(engine_sha256=sha256_file(engine))
    verify_engine_file(manifest, engine)
    engine.write_bytes(b"plan-v2")
    with pytest.raises(EngineCompatibilityError, match="does not match its manifest"):
        verify_engine_file(manifest, engine)
    engine.unlink()
    with pytest.raises(EngineCompatibilityError, match="does not exist"):
        verify_engine_file(manifest, engine)
