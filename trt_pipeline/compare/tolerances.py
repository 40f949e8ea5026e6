"""How ``compare`` evaluates the gate table (:mod:`trt_pipeline.accuracy.gates`) with Polygraphy.

Every candidate output is compared with the PyTorch reference (transformers) on identical inputs;
the metrics are those of :mod:`trt_pipeline.accuracy.metrics` and the limits those of
:data:`~trt_pipeline.accuracy.gates.DEFAULT_GATES` (override with ``--tol KEY=VALUE`` or
``CompareConfig(tolerances={...})``, e.g. ``fp16.logits.cosine=0.999``, ``int8.tokens=0.25``,
``fp32.present.atol=off``).

Where Polygraphy does the maths (nothing is re-implemented here):

* one ``SimpleCompareFunc(check_error_stat="quantile", error_quantile=q)`` per comparison computes
  max/mean/median/quantile absolute and relative differences (relative to the *reference*: we
  compare (candidate, reference) pairs, and Polygraphy divides by the second output); it carries
  no verdict itself (``atol=rtol=inf``);
* the gates are Polygraphy's ``SimpleThreshold`` evaluated on that stored result
  (``threshold.passed(result.metric_values())``), so the statistics are computed once:
  max abs = ``SimpleThreshold("max", atol, rtol=0)``; p99 rel =
  ``SimpleThreshold("quantile", p99_rel * rms(reference), rtol=0)`` per sample, and the reported
  p99 rel is :func:`~trt_pipeline.accuracy.metrics.relative_to_rms` of Polygraphy's
  ``quantile_absdiff``;
* ``CosineSimilarityCompareFunc`` computes the cosine similarity and its verdict (threshold -1
  when not gated).

Polygraphy's element-wise relative error ``|a - r| / |r|`` is reported (``max_rel``,
``p99_rel_elementwise``), never gated (see :mod:`trt_pipeline.accuracy.metrics` for why).
Gates are per sample: an output passes only if it passes on every input the data loader produced.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from trt_pipeline.accuracy.gates import PrecisionGates, output_group
from trt_pipeline.accuracy.metrics import relative_to_rms

__all__ = ["GateCheck", "OutputStats", "compare_funcs", "evaluate"]


def compare_funcs(gates: PrecisionGates, outputs: Iterable[str], quantile: float = 0.99) -> list[Any]:
    """Polygraphy compare functions for ``gates``: statistics (no verdict) + cosine (with verdict)."""
    from polygraphy.comparator.compare import CosineSimilarityCompareFunc, SimpleCompareFunc

    cosine: dict[str, float] = {"": -1.0}
    for name in outputs:
        gate = gates.output(output_group(name))
        if gate.cosine is not None:
            cosine[name] = float(gate.cosine)
    stats = SimpleCompareFunc(check_error_stat="quantile", error_quantile=quantile, atol=math.inf, rtol=math.inf)
    return [stats, CosineSimilarityCompareFunc(cosine_similarity_threshold=cosine)]


@dataclass
class GateCheck:
    """One gate of one output: its limit, the worst value over the samples and where it occurred."""

    metric: str  # "atol" | "cosine" | "p99_rel"
    limit: float
    value: float
    sample: str
    passed: bool
    failed_samples: int = 0

    def describe(self) -> str:
        names = {"atol": "max abs error", "cosine": "cosine similarity", "p99_rel": "p99 relative error"}
        relation = ">=" if self.metric == "cosine" else "<="
        digits = 8 if self.metric == "cosine" else 3
        return (f"{names[self.metric]} {_fmt(self.value, digits)} (gate {relation} {_fmt(self.limit, digits)}) "
                f"at {self.sample}")


@dataclass
class OutputStats:
    """Worst-case numbers of one output of one backend over every sample."""

    backend: str
    precision: str
    component: str
    output: str
    samples: int = 0
    max_abs: float = 0.0
    mean_abs: float = 0.0  # mean over samples of Polygraphy's mean_absdiff
    p99_abs: float = 0.0
    max_rel: float = 0.0  # Polygraphy's element-wise max |a - r| / |r| (informational)
    p99_rel_elementwise: float = 0.0  # Polygraphy's element-wise p99 |a - r| / |r| (informational)
    p99_rel: float = 0.0  # p99 |a - r| / rms(r): the gated relative error
    cosine: float = 1.0
    worst_sample: str = ""
    shape_mismatch: list[str] = field(default_factory=list)
    gates: list[GateCheck] = field(default_factory=list)

    @property
    def group(self) -> str:
        return output_group(self.output)

    @property
    def passed(self) -> bool:
        return not self.shape_mismatch and all(g.passed for g in self.gates)

    def failures(self) -> list[str]:
        where = f"{self.backend} {self.component} output `{self.output}`"
        out = [f"{where}: shapes differ from the reference at {', '.join(self.shape_mismatch)}"] if self.shape_mismatch else []
        out += [f"{where}: {g.describe()}" for g in self.gates if not g.passed]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "precision": self.precision,
            "component": self.component,
            "output": self.output,
            "samples": self.samples,
            "max_abs": _json_float(self.max_abs),
            "mean_abs": _json_float(self.mean_abs),
            "p99_abs": _json_float(self.p99_abs),
            "max_rel": _json_float(self.max_rel),
            "p99_rel_elementwise": _json_float(self.p99_rel_elementwise),
            "p99_rel": _json_float(self.p99_rel),
            "cosine": _json_float(self.cosine),
            "worst_sample": self.worst_sample,
            "shape_mismatch": self.shape_mismatch,
            "gates": [
                {"metric": g.metric, "limit": g.limit, "value": _json_float(g.value), "sample": g.sample,
                 "passed": g.passed, "failed_samples": g.failed_samples}
                for g in self.gates
            ],
            "passed": self.passed,
        }


def _bad(value: float | None) -> bool:
    return value is None or math.isnan(value)


def evaluate(
    accuracy: Any, pair: tuple[str, str], labels: list[str], gates: PrecisionGates, *,
    backend: str, precision: str, component: str, scales: list[dict[str, float]] | None = None,
) -> list[OutputStats]:
    """Per-output worst-case statistics and gate verdicts from Polygraphy's ``AccuracyResults``.

    ``accuracy`` is what ``Comparator.compare_accuracy(..., compare_func=compare_funcs(...))`` returned
    for the runner ``pair`` (candidate, reference); ``labels[i]`` names iteration ``i``;
    ``scales[i][output]`` is the RMS of the reference output (:func:`~trt_pipeline.accuracy.metrics.rms`) that
    ``p99_rel`` is relative to.
    """
    from polygraphy.comparator.compare import SimpleThreshold

    stats_result, cosine_result = accuracy[0], accuracy[1]
    stat_iters, cos_iters = stats_result[pair], cosine_result[pair]
    names = list(dict.fromkeys(name for it in stat_iters for name in it))
    results = []
    for name in names:
        gate = gates.output(output_group(name))
        out = OutputStats(backend, precision, component, name)
        checks: dict[str, GateCheck] = {}
        if gate.atol is not None:
            checks["atol"] = GateCheck("atol", gate.atol, 0.0, "", True)
        if gate.cosine is not None:
            checks["cosine"] = GateCheck("cosine", gate.cosine, 1.0, "", True)
        if gate.p99_rel is not None:
            checks["p99_rel"] = GateCheck("p99_rel", gate.p99_rel, 0.0, "", True)
        atol_threshold = SimpleThreshold("max", gate.atol, 0.0) if gate.atol is not None else None
        p99_threshold = None
        mean_sum = 0.0
        for index, (simple_it, cos_it) in enumerate(zip(stat_iters, cos_iters)):
            label = labels[index] if index < len(labels) else f"#{index}"
            simple, cosine = simple_it.get(name), cos_it.get(name)
            if simple is None:
                continue
            if isinstance(simple, bool) or isinstance(cosine, bool):
                out.shape_mismatch.append(label)
                continue
            out.samples += 1
            mean_sum += simple.mean_absdiff
            if _bad(simple.max_absdiff) or simple.max_absdiff > out.max_abs:
                out.max_abs, out.worst_sample = simple.max_absdiff, label
            out.p99_abs = _worse(out.p99_abs, simple.quantile_absdiff)
            out.max_rel = _worse(out.max_rel, simple.max_reldiff)
            out.p99_rel_elementwise = _worse(out.p99_rel_elementwise, simple.quantile_reldiff)
            scale = (scales[index].get(name) if scales and index < len(scales) else None) or 0.0
            p99_rel = relative_to_rms(simple.quantile_absdiff, scale)
            out.p99_rel = _worse(out.p99_rel, p99_rel)
            if gate.p99_rel is not None:
                # Polygraphy's threshold on its own quantile statistic, the limit scaled to this sample.
                p99_threshold = SimpleThreshold("quantile", gate.p99_rel * scale, 0.0)
            value = cosine.cosine_similarity
            if _bad(value) or value < out.cosine:
                out.cosine = value
            _update(checks.get("atol"), simple.max_absdiff, label,
                    atol_threshold.passed(simple.metric_values()) if atol_threshold else True, higher=True)
            _update(checks.get("p99_rel"), p99_rel, label,
                    p99_threshold.passed(simple.metric_values()) if p99_threshold else True, higher=True)
            _update(checks.get("cosine"), value, label, bool(cosine), higher=False)
        out.mean_abs = mean_sum / out.samples if out.samples else 0.0
        out.gates = list(checks.values())
        results.append(out)
    return results


def _worse(current: float, new: float | None) -> float:
    if new is None:
        return current
    if math.isnan(new) or math.isnan(current):
        return math.nan
    return max(current, new)


def _update(check: GateCheck | None, value: float | None, label: str, passed: bool, *, higher: bool) -> None:
    """Track the worst value (largest error or smallest cosine) and the per-sample verdicts."""
    if check is None:
        return
    value = math.nan if value is None else float(value)
    worse = math.isnan(value) or not check.sample or (value > check.value if higher else value < check.value)
    if worse and not (check.sample and math.isnan(check.value)):
        check.value, check.sample = value, label
    if not passed:
        check.passed = False
        check.failed_samples += 1


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "nan"
    return f"{value:.{digits}g}"


def _json_float(value: float | None) -> float | str | None:
    if value is None:
        return None
    if math.isnan(value) or math.isinf(value):
        return str(value)
    return float(value)
