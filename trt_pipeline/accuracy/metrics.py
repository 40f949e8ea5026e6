"""The tensor metrics every accuracy check in the project uses: max abs, cosine, p99 relative error.

``validate`` (ONNX vs transformers over the dim grid), ``precision`` (fp16/int8 ONNX vs fp32 ONNX on
held-out data), ``compare`` (every backend vs transformers, through Polygraphy) and the GPU tests
all report these three numbers, defined once here:

* **max abs** = ``max |actual - reference|``. Meaningful when both sides run the same maths
  (fp32 export vs transformers): the difference is rounding noise and a fixed limit per output
  (1e-4 logits, 1e-5 image features) catches any real bug.
* **cosine** = ``<a, r> / (|a| |r|)`` of the flattened tensors, 1.0 when both are zero and 0.0 when
  only one is (Polygraphy's ``CosineSimilarityCompareFunc``). It catches a wrong-but-small tensor
  (a dropped bias, a swapped head) that a max-abs limit on large values lets through.
* **p99 rel** = ``quantile(|actual - reference|, 0.99) / RMS(reference)``: the error that 99 % of
  the elements stay under, in units of the tensor's typical magnitude.

Why this p99 relative error, and not the two others the project used to have:

* element-wise ``|a - r| / (|r| + 1e-6)`` (Polygraphy's ``reldiff``; the old validate/GPU-test
  metric) is unbounded where the reference is near zero. Logits, image features and keys have many
  such elements: on the tiny fp16 export its p99 is 0.05..0.06 although the cosine is 0.9999997 and
  every greedy token agrees. It measures where the zeros are, not the model.
* ``|a - r| / (|r| + 0.1 RMS(r))`` (the old ``precision`` metric) patches that with an arbitrary
  eps: for small elements it is ``10 |d| / RMS``, for large ones ``|d| / |r|``, so one number mixes
  two scales and 0.1 is a free parameter no reader can check.
* ``p99|d| / RMS(r)`` has no free parameter, is bounded, is invariant to the tensor's scale, and is
  exactly Polygraphy's ``quantile_absdiff`` statistic (``np.quantile``, linear interpolation) over
  a scale computed from the reference alone, so ``compare`` takes it straight from Polygraphy's
  ``SimpleCompareFunc(check_error_stat="quantile")`` and gates it with ``SimpleThreshold``, and the
  array path below gives the same number (tested).

:func:`relative_to_rms` is the single place where the relative error is formed; both paths call it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

#: Quantile of the absolute error that ``p99_rel`` uses.
QUANTILE = 0.99


def _flat64(array: Any) -> np.ndarray:
    return np.asarray(array, dtype=np.float64).ravel()


def rms(reference: Any) -> float:
    """Root mean square of the reference: the scale the relative error is measured in."""
    values = _flat64(reference)
    return float(np.sqrt(np.mean(values * values))) if values.size else 0.0


def relative_to_rms(abs_error: float | None, reference_rms: float) -> float | None:
    """An absolute error statistic divided by the reference's RMS (0/0 = 0, x/0 = inf)."""
    if abs_error is None:
        return None
    if reference_rms > 0:
        return float(abs_error) / reference_rms
    return 0.0 if abs_error == 0 else math.inf


def max_abs(reference: Any, actual: Any) -> float:
    """``max |actual - reference|`` (0 for empty tensors; inf when the candidate is not finite)."""
    diff = np.abs(_flat64(actual) - _flat64(reference))
    if not np.all(np.isfinite(diff)):
        return math.inf
    return float(diff.max(initial=0.0))


def cosine(reference: Any, actual: Any) -> float:
    """Cosine similarity of the flattened tensors (Polygraphy's zero-vector convention)."""
    ref, act = _flat64(reference), _flat64(actual)
    norm_ref, norm_act = float(np.linalg.norm(ref)), float(np.linalg.norm(act))
    if norm_ref == 0 and norm_act == 0:
        return 1.0
    if norm_ref == 0 or norm_act == 0:
        return 0.0
    value = float(ref @ act) / (norm_ref * norm_act)
    return value if math.isnan(value) else max(-1.0, min(1.0, value))


def p99_rel(reference: Any, actual: Any, quantile: float = QUANTILE) -> float:
    """``quantile(|actual - reference|, q) / RMS(reference)``; inf when the candidate is not finite."""
    diff = np.abs(_flat64(actual) - _flat64(reference))
    if not diff.size:
        return 0.0
    if not np.all(np.isfinite(diff)):
        return math.inf
    return relative_to_rms(float(np.quantile(diff, quantile)), rms(reference))  # type: ignore[return-value]


@dataclass(frozen=True)
class TensorMetrics:
    """The three metrics of one output on one input."""

    max_abs: float
    cosine: float
    p99_rel: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def tensor_metrics(reference: Any, actual: Any, quantile: float = QUANTILE) -> TensorMetrics:
    """max abs, cosine and p99 rel of ``actual`` against ``reference`` (shapes must match)."""
    if np.shape(reference) != np.shape(actual):
        raise ValueError(f"output shapes differ: reference {np.shape(reference)} vs actual {np.shape(actual)}")
    return TensorMetrics(max_abs(reference, actual), cosine(reference, actual), p99_rel(reference, actual, quantile))


__all__ = ["QUANTILE", "TensorMetrics", "cosine", "max_abs", "p99_rel", "relative_to_rms", "rms", "tensor_metrics"]
