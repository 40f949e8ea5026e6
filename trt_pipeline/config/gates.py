"""The compare gate table: per precision, per output group, the thresholds against the PyTorch reference.

Moved verbatim out of the former ``trt_pipeline/config.py`` (the accuracy package owns its future).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trt_pipeline.errors import ConfigError

#: Precision folders ``OUT/onnx/PRECISION`` that ``autoglm-trt compare`` knows (in report order).
COMPARE_PRECISIONS = ("fp32", "fp16", "int8")

#: Output groups that carry their own gates: the vision encoder's output, the decoder's logits and
#: its KV-cache outputs (``present.*``).
COMPARE_OUTPUT_GROUPS = ("image_features", "logits", "present")


@dataclass(frozen=True)
class OutputGate:
    """Gates of one output group against the PyTorch reference (None: not gated, still reported).

    ``atol``: max |actual - reference|. ``cosine``: min cosine similarity of the flattened tensors.
    ``p99_rel``: 99th percentile (``CompareConfig.quantile``) of |actual - reference| divided by the
    RMS of the reference output (element-wise |a - r| / |r| is unbounded near zero; it is reported
    too, as ``p99_rel_elementwise``, but not gated). Every gate applies to every sample.
    """

    atol: float | None = None
    cosine: float | None = None
    p99_rel: float | None = None


@dataclass(frozen=True)
class PrecisionGates:
    """Per-precision tensor gates and the token-level gate (min whole-sequence exact-match rate)."""

    image_features: OutputGate
    logits: OutputGate
    present: OutputGate
    token_exact_match: float

    def output(self, group: str) -> OutputGate:
        return getattr(self, group)


#: Default gates (see trt_pipeline/compare/tolerances.py for the reasoning behind each number).
DEFAULT_COMPARE_GATES: dict[str, PrecisionGates] = {
    "fp32": PrecisionGates(
        image_features=OutputGate(atol=1e-5, cosine=0.99999),
        logits=OutputGate(atol=1e-4, cosine=0.99999),
        present=OutputGate(atol=1e-4, cosine=0.99999),
        token_exact_match=1.0,
    ),
    "fp16": PrecisionGates(
        image_features=OutputGate(cosine=0.9999, p99_rel=1e-2),
        logits=OutputGate(cosine=0.9999, p99_rel=1e-2),
        present=OutputGate(cosine=0.9999, p99_rel=1e-2),
        token_exact_match=0.9,
    ),
    "int8": PrecisionGates(
        image_features=OutputGate(cosine=0.99),
        logits=OutputGate(cosine=0.99),
        present=OutputGate(cosine=0.99),
        token_exact_match=0.5,
    ),
}


def parse_gate_value(key: str, value: Any) -> float | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "off", "")):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"tolerance {key}={value!r} is not a number (or 'off').") from None
    if number != number:
        raise ConfigError(f"tolerance {key} is NaN.")
    return number
