"""build --int4: the int4 ONNX variant compiled strongly typed on TensorRT >= 10, refused elsewhere clearly."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import pytest
from rich.console import Console

from trt_pipeline.engine.builder import build_engines
from trt_pipeline.engine.options import BuildConfig
from trt_pipeline.errors import ConfigError


@pytest.fixture()
def int4_dir(tmp_path, fakes):
    return fakes.write_export_dir(tmp_path / "out", precisions=("fp32", "int4"))


@pytest.fixture
def run_build(fakes):
    def run(out: Path, trt, **options):
        ctx = fakes.fake_context(trt)
        return build_engines(BuildConfig(out, **options), ctx=ctx, console=Console(file=io.StringIO()),
                             show_progress=False), None
    return run


@pytest.mark.parametrize("version", ["10.3.0.30", "11.4.0.106"])
def test_int4_builds_strongly_typed_from_the_int4_folder(int4_dir, fake_trt_factory, run_build, version) -> None:
    trt = fake_trt_factory(version)
    results, _ = run_build(int4_dir, trt, precision="int4")
    assert all("onnx/int4" in n.parsed_from for n in trt._state.networks)
    assert trt._state.configs[-1].flags_set == []  # no precision flags: the graph says int4/fp16
    if version.startswith("10."):
        strongly_typed = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        assert [n.flags for n in trt._state.networks] == [strongly_typed] * len(results)
    assert sorted(r.engine_path.name for r in results) == ["decoder.int4.engine", "vision_encoder.int4.engine"]
    assert all(r.manifest.precision == "int4" and r.manifest.strongly_typed for r in results)


def test_int4_with_legacy_precision_flags_is_refused(int4_dir) -> None:
    with pytest.raises(ConfigError, match="--legacy-precision-flags has no INT4 builder flag"):
        BuildConfig(out_dir=int4_dir, precision="int4", legacy_precision_flags=True)


def test_int4_on_tensorrt_below_10_is_refused(int4_dir, fake_trt) -> None:
    from trt_pipeline.engine.options import validate_for_tensorrt
    from trt_pipeline.engine.tensorrt_import import TensorRTVersion, detect_shim

    shim = dataclasses.replace(detect_shim(fake_trt), version=TensorRTVersion(9, 3, 0))
    cfg = BuildConfig(out_dir=int4_dir, precision="int4")
    with pytest.raises(ConfigError, match=r"--int4 needs TensorRT >= 10 .* this is TensorRT 9.3.0"):
        validate_for_tensorrt(cfg, shim, gpu=None)
    validate_for_tensorrt(BuildConfig(out_dir=int4_dir, precision="fp16"), shim, gpu=None)  # fp16 is fine there


def test_cli_build_int4_flag_resolves_to_int4() -> None:
    from trt_pipeline.config.build import resolve_precision

    assert resolve_precision(int4=True) == "int4"
    with pytest.raises(ConfigError, match="choose one precision, got --int8 and --int4"):
        resolve_precision(int8=True, int4=True)
