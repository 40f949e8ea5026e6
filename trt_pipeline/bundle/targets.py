"""Bundle targets: which runtime each board, phone or host runs the shipped graphs on.

TensorRT targets (:data:`TARGETS`) build engines on the device from the shipped ONNX; ONNX Runtime
targets (:data:`ORT_TARGETS`: Android phones) run the ONNX itself, so their bundle carries what an
app needs instead: the graphs, the host tables, the operator list for a reduced ONNX Runtime build
and reference calls to replay on the device (``bundle/onnxruntime_bundle.py``).

Sources: JetPack 6.x ships TensorRT 10.3 with CUDA 12.6; JetPack 7.2.2+ (Thor) ships TensorRT 11.4.1
with CUDA 13 (issue 14); x86 ranges are the pyproject ``gpu-cu12`` / ``gpu-cu13`` extras (checked on
PyPI). TensorRT 10.x networks are weakly typed unless asked (trtexec ``--stronglyTyped``); on 11.x
every network is strongly typed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from trt_pipeline.config.build import PRECISIONS
from trt_pipeline.errors import ConfigError

#: The ONNX variants a bundle can ship: every registered precision but the fp32 export itself.
BUNDLE_PRECISIONS: tuple[str, ...] = tuple(p for p in PRECISIONS if p != "fp32")


@dataclass(frozen=True)
class BundleTarget:
    """One board or host family a bundle is made for."""

    runtime: ClassVar[str] = "tensorrt"
    #: the variants it builds: every one but the fp32 export (fp32 engines are not what a board runs)
    precisions: ClassVar[tuple[str, ...]] = BUNDLE_PRECISIONS

    name: str
    description: str
    tensorrt: str  # the TensorRT line expected there, e.g. "10.3" (a key of bundle.trtexec.TENSORRT_LINES)
    cuda_major: int
    constraints: tuple[str, ...]  # pip constraints for that TensorRT / CUDA
    install: str  # how autoglm-trt gets onto it
    workspace: str  # default builder workspace (Jetson memory is shared with the CPU)
    jetson: bool
    parse_table: str = "trt-10.3"  # engine.onnx_ops target of the OLDEST TensorRT this target allows

    @property
    def tensorrt_major(self) -> int:
        return int(self.tensorrt.split(".")[0])


TARGETS: dict[str, BundleTarget] = {
    "jetson-orin-jp6": BundleTarget(
        "jetson-orin-jp6", "Jetson AGX/NX Orin, JetPack 6.x (L4T r36)", "10.3", 12,
        ("tensorrt>=10.3,<10.4", "cuda-python>=12.6,<13"),
        "pip install -c constraints.txt 'autoglm-trt[cuda12]'  (TensorRT from JetPack)", "2GiB", True),
    "jetson-thor-jp7": BundleTarget(
        "jetson-thor-jp7", "Jetson Thor, JetPack 7.2.2+", "11.4", 13,
        ("tensorrt>=11.4,<11.5", "cuda-python>=13.0,<14"),
        "pip install -c constraints.txt 'autoglm-trt[cuda13]'  (TensorRT from JetPack)", "4GiB", True, "trt-11"),
    "x86-trt10": BundleTarget(
        "x86-trt10", "x86-64 + NVIDIA GPU, TensorRT 10.x wheels (CUDA 12, driver >= 525.60.13)", "10", 12,
        ("tensorrt-cu12>=10.3,<11", "cuda-python>=12.6,<13"),
        "pip install -c constraints.txt 'autoglm-trt[gpu-cu12]'", "8GiB", False),
    "x86-trt11": BundleTarget(
        "x86-trt11", "x86-64 + NVIDIA GPU, TensorRT 11.x wheels (CUDA 13, driver >= 580)", "11", 13,
        ("tensorrt-cu13>=11.0,<12", "cuda-python>=13.0,<14"),
        "pip install -c constraints.txt 'autoglm-trt[gpu-cu13]'", "8GiB", False, "trt-11"),
}


@dataclass(frozen=True)
class OrtTarget:
    """A phone family that runs the ONNX graphs on ONNX Runtime's CPU provider (nothing is built there).

    ``onnxruntime_min``: the oldest ONNX Runtime these graphs were run on by this project (1.24, the
    version its tests pin; the ``fused`` flavour's opset-23 ops need a recent one). The bundle records
    the version its reference calls were made with; the app should use that line or a newer one.
    """

    runtime: ClassVar[str] = "onnxruntime"

    name: str
    description: str
    abi: str  # the Android ABI of the native library
    package: str  # the Maven coordinate of ONNX Runtime's Android package
    onnxruntime_min: str
    #: fp32 / fp16 / int4 run on ONNX Runtime's CPU kernels; INT8 Q/DQ is TensorRT's (about 17x slower
    #: than fp32 on ONNX Runtime's CPU provider: README, small preset), so it is refused with a hint
    precisions: tuple[str, ...] = ("int4", "fp16", "fp32")


ORT_TARGETS: dict[str, OrtTarget] = {
    "android-arm64": OrtTarget(
        "android-arm64", "Android phones, arm64-v8a, ONNX Runtime's CPU provider (Java/Kotlin or C/C++ API)",
        "arm64-v8a", "com.microsoft.onnxruntime:onnxruntime-android", "1.24"),
}

#: Every target name ``bundle --target`` takes.
TARGET_NAMES: tuple[str, ...] = (*TARGETS, *ORT_TARGETS)


def get_target(name: str) -> BundleTarget | OrtTarget:
    """The target called ``name``; ConfigError listing the known ones otherwise."""
    if name in ORT_TARGETS:
        return ORT_TARGETS[name]
    if name not in TARGETS:
        raise ConfigError(f"unknown bundle target {name!r}; use one of {', '.join(TARGET_NAMES)}")
    return TARGETS[name]
