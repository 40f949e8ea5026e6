"""TensorRT engines: options, optimization profiles, build, manifest, inspection.

Importing this package does not import TensorRT; every TensorRT call goes through
:func:`trt_pipeline.engine.tensorrt_import.require_tensorrt`. The runner lives in
:mod:`trt_pipeline.runtime.tensorrt_runner`.
"""

from trt_pipeline.engine.builder import BuildResult, build_engines, plan_build
from trt_pipeline.engine.inspect import EngineReport, inspect_engine
from trt_pipeline.engine.manifest import (
    EngineManifest,
    check_compatible,
    manifest_path_for,
    read_manifest,
    write_manifest,
)
from trt_pipeline.engine.options import BuildConfig, parse_shapes, parse_workspace
from trt_pipeline.engine.profiles import Profile, ShapeOverrides, ShapeRange, derive_profiles, select_profile
from trt_pipeline.engine.tensorrt_import import (
    GpuInfo,
    TensorRTContext,
    TensorRTVersion,
    detect_gpu,
    import_tensorrt,
    require_tensorrt,
)

__all__ = [
    "BuildConfig",
    "BuildResult",
    "EngineManifest",
    "EngineReport",
    "GpuInfo",
    "Profile",
    "ShapeOverrides",
    "ShapeRange",
    "TensorRTContext",
    "TensorRTVersion",
    "build_engines",
    "check_compatible",
    "derive_profiles",
    "detect_gpu",
    "import_tensorrt",
    "inspect_engine",
    "manifest_path_for",
    "parse_shapes",
    "parse_workspace",
    "plan_build",
    "read_manifest",
    "require_tensorrt",
    "select_profile",
    "write_manifest",
]
