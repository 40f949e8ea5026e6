"""The one gate table: per precision, the limits each output group must meet, and the token gate.

``compare`` (every backend vs transformers), ``precision`` (fp16/int8 ONNX vs the fp32 ONNX on
held-out data), ``validate`` (fp32 ONNX vs transformers: the ``atol`` column) and the GPU tests read
their limits from :data:`DEFAULT_GATES`; the metrics are those of :mod:`trt_pipeline.accuracy.metrics`.

============  ================  ===============  ==========  ===========  ===================  ====================
precision     output group      max abs (atol)   cosine >=   p99 rel <=   teacher-forced >=    token exact match >=
============  ================  ===============  ==========  ===========  ===================  ====================
fp32          image_features    1e-5             0.99999     -            100 %                100 %
fp32          logits, present   1e-4             0.99999     -
fp16          all               -                0.9999      1e-2         99 %                 90 %
int8          all               -                0.99        -            90 %                 50 %
int4          all               -                0.99        -            90 %                 50 %
============  ================  ===============  ==========  ===========  ===================  ====================

Why these numbers:

* **fp32** runs the same maths as the reference with other kernels, fusions and summation orders,
  so differences are float32 rounding noise (~1e-7 relative per op; the tiny export shows
  ~3e-6 on logits, ~3e-7 on image features). The vision output is a normalised feature map (small
  values, tighter limit); logits and the KV cache grow with depth. Cosine 0.99999 catches a
  wrong-but-small tensor (e.g. a dropped bias) that a max-abs limit on large values would let
  through. A different greedy token can then only come from an exact near-tie, so token agreement
  must be 100 %: anything less is an export bug.
* **fp16** (AutoCast, float32 I/O) has a 2^-11 ~ 4.9e-4 unit roundoff; after tens of layers the
  bulk of the elements is a few 1e-4..1e-3 of the tensor's scale off. A max-abs limit would be
  dominated by a handful of outliers and cannot be set independently of each output's magnitude,
  so the gate is on the 99th percentile of the error relative to the output's RMS (1e-2, ~20x
  the unit roundoff) plus cosine >= 0.9999 (overall direction). Greedy decoding amplifies any
  near-tie between the top two logits into a different continuation, so whole-sequence exact
  match is strict; 90 % tolerates one prompt in ten flipping at a near-tie.
* **int8** (explicit Q/DQ on the linear layers, per-tensor activation scales) perturbs logits by
  ~1 % of their scale; only cosine >= 0.99 is gated (a broken scale, a missing Q/DQ pair or a bad
  calibration falls far below it). Half of the held-out prompts must still produce exactly the
  same tokens as the reference; below that, INT8 changes the agent's actions too often to ship.
* **int4** (weight-only, block-quantized weights, fp16 activations) is held to the int8 limits: the
  agent's actions must survive it as they must survive INT8, and a wrong block scale or a transposed
  weight falls far below cosine 0.99. Measured on the 1.4 M-parameter trained fixture (28 held-out
  prompts): the defaults (AWQ with clipping, 16-row blocks from the dims rule) reach a worst logits
  cosine of 0.995 and 97.9 % teacher-forced; AWQ-lite with 128-row blocks (one scale per column
  there) 0.985 and fails (docs/quantization.md).

**Two token gates, teacher-forced first.** Both count greedy tokens of the held-out prompts against the
reference's (:mod:`trt_pipeline.accuracy.tokens`). The *teacher-forced* agreement (the share of the
reference's steps the candidate predicts given the reference prefix) is the primary one: it is what
the issue's acceptance asks (>= 90 % for a quantized decoder), each of its hundreds of steps counts
once, so it moves smoothly with the precision's quality, and a regression that flips 5 % of steps
shows as 5 points. The *exact-sequence* rate is the agent's view (a prompt counts as wrong from its
first flipped token on); on 28 prompts it moves in steps of 3.6 points and one near-tie decides a
prompt, so its limits stay where they were (50 % for int8/int4) as a floor, not raised to track the
teacher-forced one. Measured by CI (trained fixture, 28 held-out prompts, 16 new tokens, vs
transformers): int8 67.9 % exact / 97.1 % teacher-forced, fp16 96 % / 99.8 %. The fp16 limit (99 %)
allows about one flipped step in a hundred (near-ties the fp16 rounding may flip); fp32 must agree
on every step. Exact agreement implies teacher-forced agreement (same prefix, same argmax), so a
candidate that passes the exact gate can only fail the teacher-forced one through steps after a
first divergence that it also gets wrong given the right prefix.

Token gates assume a trained checkpoint: random weights have flat next-token distributions (median
top-1/top-2 logit margin ~0.1 on the tiny preset), where any perturbation flips near-ties. CI and the
token-agreement tests use the ``trained`` fixture (``init-checkpoint --preset trained``, margin ~5.8).
Besides the gated exact-match rate, ``compare`` and ``precision`` report teacher-forced agreement
(:mod:`trt_pipeline.accuracy.tokens`).

Overrides use keys ``PRECISION.GROUP.METRIC`` (``fp16.logits.cosine=0.999``; ``off`` removes a gate),
``PRECISION.tokens`` (exact-sequence rate) and ``PRECISION.teacher_forced`` (:func:`with_overrides`),
as ``compare --tol`` and ``[compare]`` accept them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from trt_pipeline.errors import ConfigError
from trt_pipeline.precisions import PRECISIONS

#: Precisions that have gates (the folders ``OUT/onnx/PRECISION``), in report order: every name of
#: the one precision registry (:mod:`trt_pipeline.precisions`).
GATED_PRECISIONS = PRECISIONS

#: Output groups with their own gates: the vision encoder's output, the decoder's logits and its
#: KV-cache outputs (every ``present.{i}.key|value``).
OUTPUT_GROUPS = ("image_features", "logits", "present")

#: Override key (``PRECISION.KEY``) -> the token gate it sets ('off' = 0).
TOKEN_GATE_KEYS = {"tokens": "token_exact_match", "teacher_forced": "token_teacher_forced"}

#: Gate metric -> direction; ``atol`` limits max abs, ``cosine`` is a floor, ``p99_rel`` a ceiling.
GATE_METRICS = {"atol": "<=", "cosine": ">=", "p99_rel": "<="}


def output_group(output: str) -> str:
    """``image_features`` / ``logits`` / ``present`` (every ``present.{i}.key|value``)."""
    return "present" if output.startswith("present.") else output


@dataclass(frozen=True)
class Gate:
    """One limit: ``metric`` (atol | cosine | p99_rel) of output group ``output`` against ``threshold``."""

    output: str
    metric: str
    threshold: float

    @property
    def op(self) -> str:
        return GATE_METRICS[self.metric]

    def check(self, value: float | None) -> bool:
        """Pass/fail of one value; None and NaN fail."""
        if value is None or math.isnan(value):
            return False
        return value >= self.threshold if self.op == ">=" else value <= self.threshold

    def to_dict(self) -> dict[str, Any]:
        return {"output": self.output, "metric": self.metric, "op": self.op, "threshold": self.threshold}


@dataclass(frozen=True)
class OutputGate:
    """Limits of one output group (None: not gated, still reported)."""

    atol: float | None = None
    cosine: float | None = None
    p99_rel: float | None = None

    def gates(self, output: str) -> tuple[Gate, ...]:
        return tuple(Gate(output, metric, getattr(self, metric)) for metric in GATE_METRICS
                     if getattr(self, metric) is not None)


@dataclass(frozen=True)
class PrecisionGates:
    """Per-precision tensor gates and the token gates (min teacher-forced agreement, min whole-sequence
    exact-match rate)."""

    image_features: OutputGate
    logits: OutputGate
    present: OutputGate
    token_exact_match: float
    token_teacher_forced: float

    def output(self, group: str) -> OutputGate:
        return getattr(self, group)

    def gates(self, groups: Iterable[str] = OUTPUT_GROUPS) -> tuple[Gate, ...]:
        """Every tensor gate of ``groups`` as flat rows."""
        return tuple(gate for group in groups for gate in self.output(group).gates(group))


#: INT8 and INT4 ship under the same gates: the user judges both by the same agent actions.
QUANTIZED_GATES = PrecisionGates(
    image_features=OutputGate(cosine=0.99),
    logits=OutputGate(cosine=0.99),
    present=OutputGate(cosine=0.99),
    token_exact_match=0.5,
    token_teacher_forced=0.9,
)

#: The gate table (see the module docstring for the reasoning behind each number).
DEFAULT_GATES: dict[str, PrecisionGates] = {
    "fp32": PrecisionGates(
        image_features=OutputGate(atol=1e-5, cosine=0.99999),
        logits=OutputGate(atol=1e-4, cosine=0.99999),
        present=OutputGate(atol=1e-4, cosine=0.99999),
        token_exact_match=1.0,
        token_teacher_forced=1.0,
    ),
    "fp16": PrecisionGates(
        image_features=OutputGate(cosine=0.9999, p99_rel=1e-2),
        logits=OutputGate(cosine=0.9999, p99_rel=1e-2),
        present=OutputGate(cosine=0.9999, p99_rel=1e-2),
        token_exact_match=0.9,
        token_teacher_forced=0.99,
    ),
    "int8": QUANTIZED_GATES,
    "int4": QUANTIZED_GATES,
}


def parse_gate_value(key: str, value: Any) -> float | None:
    """A limit from the command line or a TOML file: a number, or None/'off'/'' (no gate)."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "off", "")):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"tolerance {key}={value!r} is not a number (or 'off').") from None
    if number != number:
        raise ConfigError(f"tolerance {key} is NaN.")
    return number


def check_gate_key(key: str) -> None:
    """ConfigError unless ``key`` is ``PRECISION.GROUP.METRIC``, ``PRECISION.tokens`` or ``PRECISION.teacher_forced``."""
    parts = key.split(".")
    ok = (len(parts) == 2 and parts[0] in GATED_PRECISIONS and parts[1] in TOKEN_GATE_KEYS) or (
        len(parts) == 3 and parts[0] in GATED_PRECISIONS and parts[1] in OUTPUT_GROUPS and parts[2] in GATE_METRICS)
    if not ok:
        raise ConfigError(
            f"unknown tolerance key {key!r}: use PRECISION.GROUP.METRIC, PRECISION.tokens or PRECISION.teacher_forced "
            f"with PRECISION in "
            f"{list(GATED_PRECISIONS)}, GROUP in {list(OUTPUT_GROUPS)}, METRIC in {list(GATE_METRICS)}."
        )


def with_overrides(precision: str, overrides: Iterable[tuple[str, float | None]] = ()) -> PrecisionGates:
    """:data:`DEFAULT_GATES` of ``precision`` with the ``PRECISION.…`` keys of ``overrides`` applied."""
    gates = DEFAULT_GATES[precision]
    for key, value in overrides:
        parts = key.split(".")
        if parts[0] != precision:
            continue
        if parts[1] in TOKEN_GATE_KEYS:
            gates = dataclasses.replace(gates, **{TOKEN_GATE_KEYS[parts[1]]: 0.0 if value is None else value})
        else:
            group = dataclasses.replace(gates.output(parts[1]), **{parts[2]: value})
            gates = dataclasses.replace(gates, **{parts[1]: group})
    return gates


__all__ = [
    "DEFAULT_GATES", "GATED_PRECISIONS", "GATE_METRICS", "TOKEN_GATE_KEYS", "Gate", "OUTPUT_GROUPS", "OutputGate", "PrecisionGates",
    "check_gate_key", "output_group", "parse_gate_value", "with_overrides",
]
