"""The one registry of precision names: every ONNX variant folder ``OUT/onnx/NAME`` the pipeline makes.

Each command that takes a precision (``precision``, ``build``, ``compare``, ``bench``, the runners,
the gate table) checks the name here, so a new precision is added in one place and an unknown name
gets the same error everywhere, listing the valid names.

Why these four:

* ``fp32``: the export itself, validated against transformers.
* ``fp16``: ModelOpt AutoCast (fp16 activations and weights; what a strongly typed engine runs).
* ``int8``: explicit W8A8 Q/DQ (ModelOpt ONNX PTQ, calibrated on a CPU).
* ``int4``: weight-only INT4 (ModelOpt AWQ / RTN), block-quantized ``DequantizeLinear`` (opset 21)
  feeding fp16 (or fp32) MatMuls; TensorRT >= 10 builds it strongly typed, ONNX Runtime fuses it
  into its 4-bit ``MatMulNBits`` kernel.
"""

from __future__ import annotations

from collections.abc import Iterable

from trt_pipeline.errors import ConfigError

#: Every precision name, in report order (fp32 first: the reference).
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8", "int4")

#: Precisions whose folder is made by ``autoglm-trt precision NAME`` from the fp32 export.
DERIVED_PRECISIONS: tuple[str, ...] = PRECISIONS[1:]

#: Precisions carrying quantized weights (Q/DQ nodes in the graph).
QUANTIZED_PRECISIONS: tuple[str, ...] = ("int8", "int4")

#: Minimum TensorRT major version that builds each precision's ONNX (strongly typed).
MIN_TENSORRT_MAJOR: dict[str, int] = {"fp32": 8, "fp16": 8, "int8": 8, "int4": 10}


def check_precision(name: str, allowed: Iterable[str] = PRECISIONS, *, option: str = "precision") -> str:
    """``name`` if it is one of ``allowed``; else a ConfigError listing the valid names.

    ``option`` is how the user spelled the setting (``--precision``, ``[compare] precisions``...).
    """
    allowed = tuple(allowed)
    if name in allowed:
        return name
    what = f"{option} {name!r} is not available here" if name in PRECISIONS else f"unknown {option} {name!r}"
    raise ConfigError(
        f"{what}; valid names: {', '.join(allowed)}.",
        hint="precision names are listed in trt_pipeline.precisions.PRECISIONS.",
    )


__all__ = ["DERIVED_PRECISIONS", "MIN_TENSORRT_MAJOR", "PRECISIONS", "QUANTIZED_PRECISIONS", "check_precision"]
