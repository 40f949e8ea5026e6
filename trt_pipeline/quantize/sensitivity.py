"""Per-group INT8 sensitivity: the output error with only that node group quantized.

For each :class:`~trt_pipeline.quantize.node_groups.NodeGroup` of the decoder (per layer x
{attn, mlp}, plus the LM head) ModelOpt quantizes that group alone (every other weighted GEMM is
in ``nodes_to_exclude``), with the ranges of the one calibration pass
(:class:`~trt_pipeline.quantize.int8.Int8Calibration`: no recalibration per group), and the
result runs on ONNX Runtime over the calibration feeds. Its logits are compared with the fp32
graph's (computed once):

* ``kl`` (the ranking key): mean over positions of KL(softmax(fp32) || softmax(int8)), in nats:
  the change of the next-token distribution, which is what decides the greedy token;
* ``p99_rel``, ``cosine_min``, ``top1_agreement``: the project's tensor metrics
  (:mod:`trt_pipeline.accuracy.metrics`), for the report.

The unquantized rest runs in fp32 (``high_precision_dtype="fp32"``) while measuring, so the
number is the group's INT8 error alone, not mixed with fp16 rounding of the other groups.
Cost: one ModelOpt Q/DQ placement (no calibration) and one pass over the calibration feeds per group.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trt_pipeline.accuracy.metrics import tensor_metrics
from trt_pipeline.quantize.node_groups import NodeGroup


@dataclass(frozen=True)
class GroupSensitivity:
    """The logits error of the decoder with only ``group`` quantized, over the calibration feeds."""

    group: str
    role: str
    layer: int | None
    nodes: int
    kl: float
    p99_rel: float
    cosine_min: float
    top1_agreement: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    values = np.asarray(logits, np.float64)
    shifted = values - values.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def kl_divergence(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Mean over positions of KL(softmax(reference) || softmax(candidate)) (nats), last axis = vocab."""
    ref, cand = log_softmax(reference), log_softmax(candidate)
    return float(np.mean(np.sum(np.exp(ref) * (ref - cand), axis=-1)))


def decoder_logits(path: Path, feeds: Sequence[dict[str, np.ndarray]]) -> list[np.ndarray]:
    """The ``logits`` output of ``path`` for every feed (ONNX Runtime CPU; float32)."""
    from trt_pipeline.quantize.accuracy import run_feed
    from trt_pipeline.runtime.onnxruntime_runner import session

    sess = session(path)
    try:
        return [run_feed(sess, feed, ["logits"])["logits"] for feed in feeds]
    finally:
        del sess


def logits_error(group: NodeGroup, reference: Sequence[np.ndarray], actual: Sequence[np.ndarray]) -> GroupSensitivity:
    """Aggregate the per-feed errors of one group's candidate into a :class:`GroupSensitivity`."""
    rows = [tensor_metrics(r, a) for r, a in zip(reference, actual)]
    top1 = np.concatenate([(np.argmax(r, -1) == np.argmax(a, -1)).ravel() for r, a in zip(reference, actual)])
    return GroupSensitivity(
        group=group.name, role=group.role, layer=group.layer, nodes=len(group.nodes),
        kl=float(np.mean([kl_divergence(r, a) for r, a in zip(reference, actual)])),
        p99_rel=float(max(r.p99_rel for r in rows)),
        cosine_min=float(min(r.cosine for r in rows)),
        top1_agreement=float(np.mean(top1)),
    )


def exact_patterns(groups: Sequence[NodeGroup]) -> list[str]:
    """ModelOpt ``nodes_to_exclude`` patterns matching exactly the nodes of ``groups``."""
    from trt_pipeline.quantize.int8 import exact_pattern

    return [exact_pattern(name) for group in groups for name in group.nodes]


def excluding_all_but(groups: Sequence[NodeGroup], kept: Sequence[NodeGroup]) -> list[str]:
    """``nodes_to_exclude`` patterns for every group of ``groups`` not in ``kept``."""
    names = {group.name for group in kept}
    return exact_patterns([group for group in groups if group.name not in names])


def measure_sensitivity(
    src: Path,
    feeds: Sequence[dict[str, np.ndarray]],
    calibration: Any,
    groups: Sequence[NodeGroup],
    scratch: Path,
    *,
    quantize_options: dict[str, Any],
    progress: Any = None,
) -> tuple[list[GroupSensitivity], float]:
    """Each group quantized alone vs fp32, on the calibration ``feeds``; (results, seconds).

    ``calibration`` is the :class:`~trt_pipeline.quantize.int8.Int8Calibration` of ``src``;
    ``quantize_options`` are :func:`~trt_pipeline.quantize.int8.quantize_int8_file`'s method,
    op types and exclusion options (the user's exclusions stay excluded).
    """
    from trt_pipeline.quantize.int8 import quantize_int8_file

    start = time.perf_counter()
    reference = decoder_logits(src, feeds)
    options = dict(quantize_options)
    user_excluded = list(options.pop("nodes_to_exclude", ()))
    results = []
    for group in groups:
        candidate = scratch / f"sensitivity.{group.name}.onnx"
        quantize_int8_file(src, candidate, feeds, **options, high_precision_dtype="fp32", calibration=calibration,
                           nodes_to_exclude=user_excluded + excluding_all_but(groups, [group]), external_data=False)
        results.append(logits_error(group, reference, decoder_logits(candidate, feeds)))
        candidate.unlink()
        if progress is not None:
            progress()
    return results, round(time.perf_counter() - start, 3)


def by_sensitivity(results: Sequence[GroupSensitivity]) -> list[str]:
    """Group names, most sensitive (largest KL) first; ties by p99 rel then name (deterministic)."""
    return [r.group for r in sorted(results, key=lambda r: (-r.kl, -r.p99_rel, r.group))]


def sensitivity_chart(path: Path, results: Sequence[GroupSensitivity], kept: Sequence[str], target: float | None) -> Path:
    """A bar chart (matplotlib, Agg) of each group's KL, in layer order; kept-in-high-precision bars marked."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    names = [r.group for r in results]
    colors = ["tab:red" if n in kept else "tab:blue" for n in names]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.35 * len(names) + 2), 4))
    ax.bar(range(len(names)), [max(r.kl, 1e-12) for r in results], color=colors)
    ax.set_yscale("log")
    ax.set_xticks(range(len(names)), names, rotation=70, ha="right", fontsize=8)
    ax.set_ylabel("logits KL(fp32 || this group int8), nats", fontsize=8)
    title = f"INT8 sensitivity per decoder node group\nred: kept in high precision ({len(kept)}/{len(names)})"
    ax.set_title(title + (f", target agreement {target:g}" if target is not None else ""), fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


__all__ = ["GroupSensitivity", "by_sensitivity", "decoder_logits", "kl_divergence", "measure_sensitivity",
           "sensitivity_chart"]
