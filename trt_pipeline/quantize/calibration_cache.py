"""The TensorRT implicit-INT8 calibration cache text format (``IInt8Calibrator`` cache).

A header ``TRT-{NV_TENSORRT_VERSION}-EntropyCalibration2`` then one ``tensor: hex(float32 scale)``
line per tensor (format and sources: :mod:`trt_pipeline.quantize.int8`). Kept apart from the
quantizer so the engine builder can read and re-header caches without importing ONNX / ModelOpt.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

from trt_pipeline.errors import CalibrationError

DEFAULT_TRT_VERSION = "10.3.0"  # JetPack 6.x (the TensorRT 10 line that still has implicit INT8)
CACHE_ALGORITHM = "EntropyCalibration2"
HEADER_PATTERN = re.compile(r"TRT-(\d+)-(\w+)")


def cache_header(trt_version: str, algorithm: str = CACHE_ALGORITHM) -> str:
    """``TRT-100300-EntropyCalibration2`` for TensorRT ``10.3.0``: the header that release expects."""
    return f"TRT-{trt_version_number(trt_version)}-{algorithm}"


def retarget_calibration_cache(cache: bytes, trt_version: str) -> bytes:
    """``cache`` with its header rewritten for ``trt_version`` (scales are release independent).

    Raises:
        CalibrationError: when the first line is not a calibration cache header.
    """
    head, newline, rest = cache.partition(b"\n")
    match = HEADER_PATTERN.fullmatch(head.decode("ascii", errors="replace").strip())
    if match is None:
        raise CalibrationError(
            f"not a TensorRT calibration cache (bad header {head[:60]!r})",
            hint="regenerate it with `autoglm-trt precision int8 OUT`",
        )
    return cache_header(trt_version, match.group(2)).encode("ascii") + newline + rest


def trt_version_number(version: str) -> int:
    """``"10.3.0"`` -> 100300 (NV_TENSORRT_VERSION of TensorRT >= 10), ``"8.6.1"`` -> 8601."""
    parts = [int(p) for p in re.findall(r"\d+", version)[:3]] + [0, 0, 0]
    major, minor, patch = parts[:3]
    if major >= 10:
        return major * 10000 + minor * 100 + patch
    return major * 1000 + minor * 100 + patch


def scale_to_hex(scale: float) -> str:
    """IEEE-754 float32 bits of ``scale`` as 8 hex digits, most significant byte first."""
    return struct.pack("!f", float(scale)).hex()


def hex_to_scale(text: str) -> float:
    return float(struct.unpack("!f", bytes.fromhex(text.strip()))[0])


def write_calibration_cache(path: Path | str, scales: dict[str, float], trt_version: str = DEFAULT_TRT_VERSION) -> Path:
    """Write a TensorRT implicit-INT8 calibration cache (``tensor: hex(scale)``, scale = amax/127)."""
    path = Path(path)
    lines = [cache_header(trt_version)]
    lines += [f"{name}: {scale_to_hex(scale)}" for name, scale in sorted(scales.items())]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def read_calibration_cache(path: Path | str) -> tuple[str, dict[str, float]]:
    """(header, {tensor: scale}) of a calibration cache written by TensorRT or by us."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    if not lines or not HEADER_PATTERN.fullmatch(lines[0].strip()):
        raise CalibrationError(f"{path} is not a TensorRT calibration cache (bad header {lines[:1]}).", path=path)
    scales = {}
    for line in lines[1:]:
        if line.strip():
            name, value = line.rsplit(": ", 1)
            scales[name] = hex_to_scale(value)
    return lines[0].strip(), scales
