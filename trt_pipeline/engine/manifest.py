"""Engine manifest ``COMPONENT.PRECISION.engine.json`` and the compatibility check before loading.

TensorRT engines are not portable: by default a plan only deserializes in the exact TensorRT release
(major, minor, patch, build) and on the GPU architecture that built it. Version-compatible plans
(``BuilderFlag.VERSION_COMPATIBLE``) run on the same or newer TensorRT within the major, plus
10 -> 11 and 8 -> 10 across majors; hardware-compatible plans run on any Ampere+ GPU
(``AMPERE_PLUS``) or any GPU of the same compute capability (``SAME_COMPUTE_CAPABILITY``).
Sources: https://docs.nvidia.com/deeplearning/tensorrt/11.1.0/inference-library/engine-compatibility.html
and the 11.4.1 support matrix
https://docs.nvidia.com/deeplearning/tensorrt/11.4.1/getting-started/support-matrix.html

:func:`check_compatible` applies these rules to the manifest *before* deserializing, so a mismatched
engine is refused with a message instead of a TensorRT error (or a crash) inside an application.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from trt_pipeline.artifacts import read_json, sha256_file, write_json_atomic
from trt_pipeline.artifacts.layout import ENGINE_MANIFEST_SUFFIX, engine_manifest_path
from trt_pipeline.engine.profiles import Profile
from trt_pipeline.engine.tensorrt_import import (
    GpuInfo,
    TensorRTVersion,
    parse_compute_capability,
)
from trt_pipeline.errors import EngineCompatibilityError

FORMAT_VERSION = 1
MANIFEST_SUFFIX = ENGINE_MANIFEST_SUFFIX

#: Across-major combinations supported for version-compatible engines: (built major, runtime major).
CROSS_MAJOR_VERSION_COMPAT = frozenset({(8, 10), (10, 11)})


@dataclass(frozen=True)
class EngineManifest:
    """What an engine was built from and with. Serialized next to the engine as ``*.engine.json``."""

    component: str
    precision: str
    engine_file: str
    engine_sha256: str
    engine_size: int
    onnx_file: str
    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    cuda_version: str
    profiles: tuple[Profile, ...]
    onnx_external_data: str | None = None
    onnx_external_data_sha256: str | None = None
    strongly_typed: bool = True
    legacy_precision_flags: bool = False
    builder_flags: tuple[str, ...] = ()
    hardware_compat: str = "none"
    version_compatible: bool = False
    workspace_bytes: int | None = None
    opt_level: int = 3
    timing_cache: str | None = None
    build_seconds: float | None = None
    created: str | None = None
    export_sha256: str | None = None
    io: tuple[Mapping[str, Any], ...] = ()
    tool_versions: Mapping[str, str] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    @property
    def profile_names(self) -> list[str]:
        return [p.name for p in self.profiles]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["profiles"] = [p.to_json() for p in self.profiles]
        data["builder_flags"] = list(self.builder_flags)
        data["io"] = [dict(item) for item in self.io]
        data["tool_versions"] = dict(self.tool_versions)
        return {"format_version": data.pop("format_version"), **data}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EngineManifest:
        known = {f for f in cls.__dataclass_fields__}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["profiles"] = tuple(Profile.from_json(p) for p in data.get("profiles", []))
        kwargs["builder_flags"] = tuple(data.get("builder_flags", ()))
        kwargs["io"] = tuple(data.get("io", ()))
        return cls(**kwargs)


def manifest_path_for(engine_path: Path | str) -> Path:
    """``x.engine`` -> ``x.engine.json`` (:func:`trt_pipeline.artifacts.layout.engine_manifest_path`)."""
    return engine_manifest_path(engine_path)


def write_manifest(manifest: EngineManifest, engine_path: Path | str) -> Path:
    """Write the manifest atomically beside its engine."""
    return write_json_atomic(manifest_path_for(engine_path), manifest.to_json())


def read_manifest(engine_path: Path | str) -> EngineManifest:
    """Read the manifest of ``engine_path``.

    Raises:
        EngineCompatibilityError: no manifest, unreadable, or a format this code does not know.
    """
    engine_path = Path(engine_path)
    path = manifest_path_for(engine_path)
    rebuild = _rebuild_hint(engine_path)
    if not path.is_file():
        raise EngineCompatibilityError(
            f"engine {engine_path} has no manifest ({path.name}), so nothing says which TensorRT and GPU it was "
            "built for; refusing to load it",
            path=path,
            hint=rebuild,
        )
    try:
        data = read_json(path)
        manifest = EngineManifest.from_json(data)
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise EngineCompatibilityError(f"cannot read engine manifest {path}: {error}", path=path, hint=rebuild) from None
    if manifest.format_version > FORMAT_VERSION:
        raise EngineCompatibilityError(
            f"engine manifest {path} has format_version {manifest.format_version}; this autoglm-trt reads up to "
            f"{FORMAT_VERSION}",
            path=path,
            hint="upgrade autoglm-trt, or " + rebuild,
        )
    return manifest


def _rebuild_hint(engine_path: Path, precision: str | None = None) -> str:
    out_dir = engine_path.parent.parent if engine_path.parent.name == "engines" else engine_path.parent
    if precision is None:
        parts = engine_path.name.split(".")
        precision = parts[-2] if len(parts) >= 3 else "fp16"
    return f"rebuild it on this device from the shipped ONNX with `autoglm-trt build {out_dir} --{precision}`"


def _built_with(manifest: EngineManifest) -> str:
    extras = []
    if manifest.version_compatible:
        extras.append("version-compatible")
    if manifest.hardware_compat != "none":
        extras.append(f"hardware-compat {manifest.hardware_compat}")
    suffix = f", {', '.join(extras)}" if extras else ""
    return (
        f"TensorRT {manifest.tensorrt_version} on {manifest.gpu_name} (compute capability "
        f"{manifest.compute_capability}, CUDA {manifest.cuda_version}{suffix})"
    )


def version_problem(built: TensorRTVersion, local: TensorRTVersion, *, version_compatible: bool) -> str | None:
    """Why an engine built with ``built`` cannot run on ``local`` TensorRT, or None."""
    if not version_compatible:
        if built.same_release(local):
            return None
        return f"TensorRT versions differ ({built} vs {local}) and the engine is not version-compatible"
    if local.release_key() < built.release_key():
        return f"a version-compatible engine only runs on the same or a newer TensorRT ({local} < {built})"
    if local.major != built.major and (built.major, local.major) not in CROSS_MAJOR_VERSION_COMPAT:
        return (
            f"version-compatible engines from TensorRT {built.major} do not run on TensorRT {local.major} "
            "(supported across majors: 8 -> 10 and 10 -> 11)"
        )
    return None


def hardware_problem(manifest: EngineManifest, gpu: GpuInfo) -> str | None:
    """Why an engine cannot run on ``gpu`` given its hardware-compatibility level, or None."""
    built_cc = parse_compute_capability(manifest.compute_capability)
    local_cc = gpu.cc_tuple
    level = manifest.hardware_compat
    if level == "ampere+":
        if local_cc < (8, 0):
            return f"an Ampere+ engine needs compute capability >= 8.0, this GPU has {gpu.compute_capability}"
        return None
    if built_cc != local_cc:
        return (
            f"compute capability differs ({manifest.compute_capability} vs {gpu.compute_capability}) and the engine "
            f"is {'built for the same compute capability only' if level == 'same-cc' else 'not hardware-compatible'}"
        )
    return None


def check_compatible(
    manifest: EngineManifest,
    local_trt_version: TensorRTVersion | str,
    local_gpu: GpuInfo,
    *,
    engine_path: Path | str | None = None,
) -> list[str]:
    """Refuse an engine that cannot run here; return warnings for what merely differs.

    Args:
        manifest: the engine's manifest.
        local_trt_version: installed TensorRT version.
        local_gpu: the local GPU.
        engine_path: the engine file, for the message (defaults to the manifest's ``engine_file``).

    Returns:
        Warnings (e.g. same compute capability but another GPU model, another CUDA version).

    Raises:
        EngineCompatibilityError: naming the engine file, what it was built with, what is here and
            how to rebuild it on this device.
    """
    local = local_trt_version if isinstance(local_trt_version, TensorRTVersion) else TensorRTVersion.parse(local_trt_version)
    built = TensorRTVersion.parse(manifest.tensorrt_version)
    path = Path(engine_path) if engine_path is not None else Path(manifest.engine_file)
    problems = [
        p
        for p in (
            version_problem(built, local, version_compatible=manifest.version_compatible),
            hardware_problem(manifest, local_gpu),
        )
        if p
    ]
    if problems:
        here = (
            f"TensorRT {local} on {local_gpu.name} (compute capability {local_gpu.compute_capability}, "
            f"CUDA {local_gpu.cuda_version})"
        )
        raise EngineCompatibilityError(
            f"engine {path} was built with {_built_with(manifest)}, but this machine has {here}: "
            + "; ".join(problems),
            path=path,
            hint=_rebuild_hint(path, manifest.precision),
        )
    warnings = []
    if manifest.gpu_name != local_gpu.name:
        warnings.append(
            f"engine {path.name} was built on {manifest.gpu_name}, this is {local_gpu.name} (same compute capability "
            "or hardware-compatible, so it loads; tactics were timed on the other GPU)"
        )
    if manifest.cuda_version.split(".")[:1] != local_gpu.cuda_version.split(".")[:1]:
        warnings.append(f"engine {path.name} was built with CUDA {manifest.cuda_version}, this is CUDA {local_gpu.cuda_version}")
    return warnings


def verify_engine_file(manifest: EngineManifest, engine_path: Path | str) -> None:
    """Check that ``engine_path`` is the engine the manifest describes (sha256).

    Raises:
        EngineCompatibilityError: the engine was replaced or truncated after its manifest was written.
    """
    engine_path = Path(engine_path)
    if not engine_path.is_file():
        raise EngineCompatibilityError(f"engine {engine_path} does not exist", path=engine_path, hint=_rebuild_hint(engine_path))
    digest = sha256_file(engine_path)
    if digest != manifest.engine_sha256:
        raise EngineCompatibilityError(
            f"engine {engine_path} does not match its manifest (sha256 {digest[:12]}... vs {manifest.engine_sha256[:12]}...): "
            "the file was replaced or damaged after it was built",
            path=engine_path,
            hint=_rebuild_hint(engine_path, manifest.precision),
        )


def check_engine_identity(
    manifest: EngineManifest, engine_path: Path | str, *, size: int, sha256: str | None = None
) -> None:
    """Check a size (and a sha256 computed while the engine was streamed, if given) against the manifest.

    Raises:
        EngineCompatibilityError: the engine was replaced or damaged after its manifest was written.
    """
    engine_path = Path(engine_path)
    problem = None
    if size != manifest.engine_size:
        problem = f"size {size} B vs {manifest.engine_size} B"
    elif sha256 is not None and sha256 != manifest.engine_sha256:
        problem = f"sha256 {sha256[:12]}... vs {manifest.engine_sha256[:12]}..."
    if problem:
        raise EngineCompatibilityError(
            f"engine {engine_path} does not match its manifest ({problem}): the file was replaced or damaged after "
            "it was built",
            path=engine_path,
            hint=_rebuild_hint(engine_path, manifest.precision),
        )


def summarize(manifest: EngineManifest) -> list[tuple[str, str]]:
    """(label, value) rows for ``autoglm-trt inspect``."""

    def fmt_profiles(profiles: Sequence[Profile]) -> str:
        return "; ".join(f"{p.name} ({len(p.shapes)} inputs)" for p in profiles)

    return [
        ("component", manifest.component),
        ("precision", manifest.precision + (" (legacy builder flags)" if manifest.legacy_precision_flags else " (strongly typed)")),
        ("TensorRT", manifest.tensorrt_version),
        ("GPU", f"{manifest.gpu_name} (compute capability {manifest.compute_capability})"),
        ("CUDA", manifest.cuda_version),
        ("hardware compat", manifest.hardware_compat),
        ("version compatible", str(manifest.version_compatible)),
        ("builder flags", ", ".join(manifest.builder_flags) or "-"),
        ("workspace", "default" if manifest.workspace_bytes is None else f"{manifest.workspace_bytes} B"),
        ("opt level", str(manifest.opt_level)),
        ("profiles", fmt_profiles(manifest.profiles)),
        ("ONNX", f"{manifest.onnx_file} (sha256 {manifest.onnx_sha256[:12]}...)"),
        ("engine", f"{manifest.engine_file} ({manifest.engine_size} B, sha256 {manifest.engine_sha256[:12]}...)"),
        ("build time", "-" if manifest.build_seconds is None else f"{manifest.build_seconds:.1f} s"),
    ]


def dumps(manifest: EngineManifest) -> str:
    return json.dumps(manifest.to_json(), indent=2)
