"""Lazy TensorRT import, GPU detection and the registry of TensorRT 10.x / 11.x behaviour.

Nothing here imports ``tensorrt`` at module import time, so ``--help`` and the CPU test suite work
without it. Every TensorRT command calls :func:`require_tensorrt` first; on a machine without the
``tensorrt`` wheel or without a CUDA GPU it raises :class:`~trt_pipeline.errors.TensorRTUnavailableError`
with a single line that says what is missing and how to get it.

Behaviour that differs between TensorRT majors lives in one table, :data:`TENSORRT_FAMILIES`, not in
``if version >= 11`` checks spread over the builder and the runner:

* **TensorRT 10.x** (JetPack 6, older desktops): networks are weakly typed unless created with
  ``NetworkDefinitionCreationFlag.STRONGLY_TYPED``; ``BuilderFlag.FP16``/``INT8`` and
  ``IInt8Calibrator`` still exist (deprecated since 10.1) and may be used with
  ``--legacy-precision-flags``.
  Docs: https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/infer/Core/Builder.html
* **TensorRT 11.x** (desktop GPUs, JetPack 7.2.2+ with 11.4.1): every network is strongly typed,
  ``STRONGLY_TYPED`` is deprecated and ignored, ``BuilderFlag.FP16``/``INT8`` and the INT8 calibrator
  were removed. Precision comes from the ONNX graph (AutoCast casts, Q/DQ nodes).
  Docs: https://docs.nvidia.com/deeplearning/tensorrt/11.0.0/_static/python-api/infer/Core/Builder.html
  and https://docs.nvidia.com/deeplearning/tensorrt/11.4.1/_static/c-api/classnvinfer1_1_1_i_builder_config-members.html

The legacy capability is not taken on trust from the version number alone: it also requires the
``FP16`` and ``INT8`` members to be present in ``trt.BuilderFlag`` (the 11.4 bindings have neither).
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any

from trt_pipeline.errors import TensorRTUnavailableError

#: How to get TensorRT and a GPU; part of every "missing" message.
INSTALL_HINT = (
    "on a machine with an NVIDIA GPU and driver, build and use the GPU image "
    "(`docker build -t autoglm-trt:gpu .`) or run `pip install 'autoglm-trt[gpu-cu12]'` "
    "(driver >= 525) or `'autoglm-trt[gpu-cu13]'` (driver >= 580); on Jetson use the TensorRT that ships "
    "with JetPack plus `pip install 'autoglm-trt[cuda12]'` (JetPack 6) or `[cuda13]` (JetPack 7); "
    "`autoglm-trt doctor` says what is missing (see docs/gpu.md)"
)

#: Lowest TensorRT version the pipeline supports (pyproject's ``gpu`` extra: tensorrt>=10.3).
MIN_SUPPORTED = (10, 3)


# --------------------------------------------------------------------------------------------
# Versions
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class TensorRTVersion:
    """A TensorRT version such as ``10.3.0.30`` (major.minor.patch.build)."""

    major: int
    minor: int = 0
    patch: int = 0
    build: int | None = None

    @classmethod
    def parse(cls, text: str) -> TensorRTVersion:
        """Parse ``"10.3.0.30"``, ``"11.4.1"``, ``"10.13"`` (extra suffixes such as ``"+cuda12"`` are ignored).

        Raises:
            ValueError: when ``text`` does not start with ``MAJOR.MINOR``.
        """
        match = re.match(r"^\s*(\d+)\.(\d+)(?:\.(\d+))?(?:\.(\d+))?", str(text))
        if not match:
            raise ValueError(f"not a TensorRT version: {text!r}")
        major, minor, patch, build = match.groups()
        return cls(int(major), int(minor), int(patch or 0), int(build) if build is not None else None)

    def same_release(self, other: TensorRTVersion) -> bool:
        """True when major.minor.patch agree and, if both carry one, the build number too.

        By default a serialized engine only loads in the exact TensorRT release that built it.
        """
        if (self.major, self.minor, self.patch) != (other.major, other.minor, other.patch):
            return False
        return self.build is None or other.build is None or self.build == other.build

    def release_key(self) -> tuple[int, int, int]:
        return (self.major, self.minor, self.patch)

    def __str__(self) -> str:
        text = f"{self.major}.{self.minor}.{self.patch}"
        return text if self.build is None else f"{text}.{self.build}"


# --------------------------------------------------------------------------------------------
# 10.x / 11.x behaviour registry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorRTFamily:
    """What one TensorRT major version does differently. One entry per major in :data:`TENSORRT_FAMILIES`.

    Attributes:
        name: ``"10.x"`` / ``"11.x"``.
        major: the major version this entry describes.
        strongly_typed_flag: pass ``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` to
            ``Builder.create_network`` to get a strongly typed network (10.x). On 11.x networks are
            always strongly typed and the flag is deprecated, so it is not passed.
        weakly_typed_networks: whether a network may be weakly typed at all (needed for the legacy
            precision flags).
        legacy_precision_flags: whether ``BuilderFlag.FP16/INT8`` + ``IInt8Calibrator`` are part of
            this major's API (still subject to the members really being present, see
            :func:`detect_shim`).
        legacy_refusal: the message given when ``--legacy-precision-flags`` is asked for on a major
            that has no such flags.
        jetpack: which JetPack carries this major (for messages).
    """

    name: str
    major: int
    strongly_typed_flag: bool
    weakly_typed_networks: bool
    legacy_precision_flags: bool
    legacy_refusal: str | None
    jetpack: str


TENSORRT_FAMILIES: dict[int, TensorRTFamily] = {
    10: TensorRTFamily(
        name="10.x",
        major=10,
        strongly_typed_flag=True,
        weakly_typed_networks=True,
        legacy_precision_flags=True,
        legacy_refusal=None,
        jetpack="JetPack 6",
    ),
    11: TensorRTFamily(
        name="11.x",
        major=11,
        strongly_typed_flag=False,
        weakly_typed_networks=False,
        legacy_precision_flags=False,
        legacy_refusal=(
            "--legacy-precision-flags is not available on TensorRT {version}: TensorRT 11 is strongly "
            "typed only (BuilderFlag.FP16/INT8 and the INT8 calibrator were removed). Drop the flag: "
            "the fp16/int8 ONNX variants already carry their precision. The flags exist only on "
            "TensorRT 10.x (JetPack 6)."
        ),
        jetpack="JetPack 7.2.2+",
    ),
}

#: BuilderFlag members that the legacy (weakly typed) precision path needs.
LEGACY_FLAG_MEMBERS = ("FP16", "INT8")


@dataclass(frozen=True)
class TensorRTShim:
    """The behaviour of the TensorRT that is actually installed: its family plus detected features."""

    version: TensorRTVersion
    family: TensorRTFamily
    legacy_precision_flags: bool
    hardware_compat_levels: frozenset[str] = field(default_factory=frozenset)

    @property
    def strongly_typed_flag(self) -> bool:
        return self.family.strongly_typed_flag

    def legacy_refusal(self) -> str:
        """Why ``--legacy-precision-flags`` cannot be used here (one paragraph)."""
        if self.family.legacy_refusal:
            return self.family.legacy_refusal.format(version=self.version)
        return (
            f"--legacy-precision-flags needs BuilderFlag.FP16 and BuilderFlag.INT8, which this "
            f"TensorRT {self.version} does not provide; drop the flag (the fp16/int8 ONNX variants "
            "already carry their precision)."
        )

    def network_flags(self, trt: ModuleType, *, strongly_typed: bool) -> int:
        """Flags for ``Builder.create_network``.

        10.x: ``1 << int(NetworkDefinitionCreationFlag.STRONGLY_TYPED)`` for a strongly typed
        network, ``0`` for a weakly typed one (legacy flags). 11.x: always ``0`` (every network is
        strongly typed; the flag is deprecated and ignored).
        https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/infer/Core/Builder.html
        """
        if not strongly_typed and not self.family.weakly_typed_networks:
            raise ValueError(f"TensorRT {self.version} only builds strongly typed networks")
        if strongly_typed and self.family.strongly_typed_flag:
            return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        return 0


def family_for(version: TensorRTVersion) -> TensorRTFamily:
    """The registry entry for ``version``; majors newer than the newest entry use the newest entry.

    Raises:
        TensorRTUnavailableError: for TensorRT older than :data:`MIN_SUPPORTED`.
    """
    if (version.major, version.minor) < MIN_SUPPORTED:
        raise TensorRTUnavailableError(
            f"TensorRT {version} is too old (this pipeline needs TensorRT >= "
            f"{MIN_SUPPORTED[0]}.{MIN_SUPPORTED[1]}, 10.x or 11.x): {INSTALL_HINT}."
        )
    if version.major in TENSORRT_FAMILIES:
        return TENSORRT_FAMILIES[version.major]
    newest = max(TENSORRT_FAMILIES)
    return replace(TENSORRT_FAMILIES[newest], name=f"{version.major}.x", major=version.major)


def _enum_members(enum: Any) -> set[str]:
    members = getattr(enum, "__members__", None)
    if members is None:
        return {name for name in dir(enum) if name.isupper()}
    return set(members)


def detect_shim(trt: ModuleType) -> TensorRTShim:
    """Describe the installed TensorRT: version family plus features detected on the module itself."""
    try:
        version = TensorRTVersion.parse(getattr(trt, "__version__", ""))
    except ValueError:
        raise TensorRTUnavailableError(
            f"cannot read the TensorRT version ({getattr(trt, '__version__', None)!r}) of "
            f"{getattr(trt, '__file__', 'tensorrt')}: reinstall TensorRT; {INSTALL_HINT}."
        ) from None
    family = family_for(version)
    flag_members = _enum_members(getattr(trt, "BuilderFlag", None))
    legacy = family.legacy_precision_flags and all(name in flag_members for name in LEGACY_FLAG_MEMBERS)
    levels = frozenset(_enum_members(getattr(trt, "HardwareCompatibilityLevel", None)))
    return TensorRTShim(version=version, family=family, legacy_precision_flags=legacy, hardware_compat_levels=levels)


# --------------------------------------------------------------------------------------------
# Import + GPU detection
# --------------------------------------------------------------------------------------------


def import_tensorrt() -> ModuleType:
    """Import the full ``tensorrt`` package (builder + runtime).

    ``tensorrt_lean`` (runtime-only) is deliberately not accepted as a substitute: it cannot build
    engines, and it only deserializes version-compatible plans, so falling back to it would turn a
    clear "TensorRT missing" into an obscure deserialization failure.

    Raises:
        TensorRTUnavailableError: one line: what is missing and how to get it.
    """
    try:
        return importlib.import_module("tensorrt")
    except ImportError as error:
        lean = "tensorrt_lean" in sys.modules or importlib.util.find_spec("tensorrt_lean") is not None
        found = " (only the runtime-only `tensorrt_lean` is installed)" if lean else ""
        raise TensorRTUnavailableError(
            f"TensorRT is not installed: `import tensorrt` failed{found} ({error}); {INSTALL_HINT}."
        ) from None
    except OSError as error:  # wheel present but its shared libraries cannot be loaded
        raise TensorRTUnavailableError(
            f"TensorRT is installed but its libraries cannot be loaded ({error}); {INSTALL_HINT}."
        ) from None


@dataclass(frozen=True)
class GpuInfo:
    """The local CUDA device, as recorded in engine manifests."""

    name: str
    compute_capability: str  # "8.6"
    cuda_version: str  # CUDA runtime version, "12.6"
    device_index: int = 0
    total_memory: int | None = None
    integrated: bool = False  # Jetson / Tegra (shared memory)

    @property
    def cc_tuple(self) -> tuple[int, int]:
        return parse_compute_capability(self.compute_capability)


def parse_compute_capability(text: str) -> tuple[int, int]:
    major, _, minor = str(text).partition(".")
    return int(major), int(minor or 0)


def _probe_torch(device_index: int) -> GpuInfo | None:
    try:
        import torch
    except ImportError:
        return None
    try:
        if not torch.cuda.is_available() or torch.cuda.device_count() <= device_index:
            return None
        props = torch.cuda.get_device_properties(device_index)
        return GpuInfo(
            name=str(props.name),
            compute_capability=f"{props.major}.{props.minor}",
            cuda_version=str(torch.version.cuda or "unknown"),
            device_index=device_index,
            total_memory=int(getattr(props, "total_memory", 0)) or None,
            integrated=bool(getattr(props, "is_integrated", False)),
        )
    except Exception:  # driver present but unusable: report as "no GPU" with the probe chain message
        return None


def import_cudart() -> Any | None:
    """cuda-python's runtime module (``cuda.bindings.runtime``, or ``cuda.cudart`` before 12.8), None if absent."""
    for name in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None


def _probe_cuda_python(device_index: int) -> GpuInfo | None:
    cudart = import_cudart()
    if cudart is None:
        return None
    try:
        err, count = cudart.cudaGetDeviceCount()
        if int(err) != 0 or count <= device_index:
            return None
        err, props = cudart.cudaGetDeviceProperties(device_index)
        if int(err) != 0:
            return None
        err, runtime_version = cudart.cudaRuntimeGetVersion()
        name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
        return GpuInfo(
            name=name.rstrip("\x00"),
            compute_capability=f"{props.major}.{props.minor}",
            cuda_version=f"{runtime_version // 1000}.{(runtime_version % 1000) // 10}" if int(err) == 0 else "unknown",
            device_index=device_index,
            total_memory=int(props.totalGlobalMem),
            integrated=bool(props.integrated),
        )
    except Exception:
        return None


#: GPU probes, tried in order: a CUDA build of PyTorch, then cuda-python.
GPU_PROBES = (_probe_torch, _probe_cuda_python)


def detect_gpu(device_index: int = 0) -> GpuInfo:
    """Name, compute capability and CUDA version of the local GPU.

    Raises:
        TensorRTUnavailableError: when no probe finds a usable CUDA device.
    """
    for probe in GPU_PROBES:
        info = probe(device_index)
        if info is not None:
            return info
    raise TensorRTUnavailableError(
        f"no CUDA GPU found (device {device_index}; neither a CUDA build of PyTorch nor cuda-python "
        f"sees one; CPU-only torch does not count): {INSTALL_HINT}, and run the container with `--gpus all`."
    )


def _set_device_cuda_python(device_index: int) -> bool:
    cudart = import_cudart()
    if cudart is None:
        return False
    (err,) = tuple(cudart.cudaSetDevice(device_index))[:1]
    if int(getattr(err, "value", err)) != 0:
        raise TensorRTUnavailableError(f"cudaSetDevice({device_index}) failed: {err}; check `nvidia-smi` and CUDA_VISIBLE_DEVICES.")
    return True


def _set_device_torch(device_index: int) -> bool:
    try:
        import torch
    except ImportError:
        return False
    if not torch.cuda.is_available():
        return False
    torch.cuda.set_device(device_index)
    return True


#: Ways to make a device current, tried in order (all that are available are used: TensorRT and
#: the torch buffers must agree).
DEVICE_SETTERS = (_set_device_cuda_python, _set_device_torch)


def select_device(device_index: int) -> None:
    """Make CUDA device ``device_index`` current for this thread.

    TensorRT builds on and deserializes onto the *current* device; without this, ``device_index=N``
    put the engine on device 0 while the runner's buffers lived on device N (review failure 8).

    Raises:
        TensorRTUnavailableError: ``device_index`` > 0 and nothing can select a device.
    """
    done = [setter(device_index) for setter in DEVICE_SETTERS]
    if device_index != 0 and not any(done):
        raise TensorRTUnavailableError(
            f"cannot select CUDA device {device_index}: neither cuda-python nor a CUDA build of PyTorch is "
            f"installed; {INSTALL_HINT}."
        )


def is_jetson() -> bool:
    """True on NVIDIA Jetson (L4T) boards."""
    return Path("/etc/nv_tegra_release").exists()


@dataclass(frozen=True)
class TensorRTContext:
    """Everything a TensorRT command needs: the module, its behaviour shim and the local GPU."""

    trt: Any
    shim: TensorRTShim
    gpu: GpuInfo

    @property
    def version(self) -> TensorRTVersion:
        return self.shim.version


def require_tensorrt(device_index: int = 0) -> TensorRTContext:
    """Import TensorRT, detect its behaviour and the GPU, or fail at once with one line.

    Raises:
        TensorRTUnavailableError: TensorRT missing/too old, or no CUDA GPU.
    """
    trt = import_tensorrt()
    shim = detect_shim(trt)
    gpu = detect_gpu(device_index)
    select_device(device_index)
    return TensorRTContext(trt=trt, shim=shim, gpu=gpu)
