"""Which ONNX operators each TensorRT target's ONNX parser accepts, and a check of exported graphs.

An exported graph is only useful for TensorRT if the parser of the TensorRT on the target takes
every node of it, and the targets differ: JetPack 6 ships TensorRT 10.3, desktops run the newest
10.x, JetPack 7.2.2+ and new desktops TensorRT 11. The tables below are the "Y" rows of the
parser's operator support matrix; the check runs on the CPU (no TensorRT needed), so CI catches a
graph change that would only fail at ``trtexec`` time on the target.

Sources (onnx/onnx-tensorrt, https://github.com/onnx/onnx-tensorrt):

* ``trt-10.3`` (JetPack 6): ``docs/operators.md`` on branch ``10.1-GA``
  (https://github.com/onnx/onnx-tensorrt/blob/10.1-GA/docs/operators.md, "opset 9 to opset 20"),
  plus ``CHANGELOG.md`` on ``main`` for 10.2 and 10.3, which add no operator (10.2: error
  handling, GRU/Squeeze importer changes; 10.3: tensor ``axes`` for Slice, ScatterElements plugin).
* ``trt-10.15`` (newest 10.x desktop): ``docs/operators.md`` on ``main`` at the 10.15 GA release
  (https://github.com/onnx/onnx-tensorrt/blob/main/docs/operators.md, "TensorRT 10.15 supports
  operators in the inclusive range of opset 9 to opset 24"); the ``CHANGELOG.md`` entries it
  adds over 10.3: Blackman/Hamming/HannWindow (10.4), STFT (10.5), Attention (10.14),
  RMSNormalization, RotaryEmbedding and TensorScatter (10.15).
* ``trt-11`` (11.x): the 10.15 table plus DFT (11.2 release notes: "Added support for the DFT
  operator"); the opset bound is 24 (11.5 raised it to 25, "Added support for ONNX opset 25";
  NVIDIA's ONNX opset guide for 11.x, https://docs.nvidia.com/deeplearning/tensorrt/latest/reference/onnx-opset-guide.html).

Only the default ONNX domain is listed: ``com.microsoft`` contrib ops (what onnxruntime-genai's
graphs use) are not parsed by any target. Per-op restrictions (e.g. ``axes`` must be a build-time
constant) are not checked here; the TensorRT build is the judge of those.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: "Y" rows of onnx-tensorrt 10.1-GA docs/operators.md (unchanged in 10.2 and 10.3).
_TRT_10_3 = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast CastLike
Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DeformConv DepthToSpace
DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather GatherElements
GatherND Gelu Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GridSample
GroupNormalization GRU HardSigmoid HardSwish Hardmax Identity If ImageScaler InstanceNormalization IsInf
IsNaN LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization LpPool
MatMul Max MaxPool Mean MeanVarianceNormalization Min Mish Mod Mul Neg NonMaxSuppression NonZero Not
OneHot Or Pad ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform
RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean
ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence RNN RoiAlign Round
ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice
Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK
Transpose Trilu Unsqueeze Upsample Where Xor
""".split())

#: operators the parser gained from 10.4 to 10.15 (CHANGELOG.md), and in 11.x.
_ADDED_BY_10_15 = frozenset({"BlackmanWindow", "HammingWindow", "HannWindow", "STFT", "Attention",
                             "RMSNormalization", "RotaryEmbedding", "TensorScatter"})
_ADDED_BY_11 = frozenset({"DFT"})

DEFAULT_DOMAINS = ("", "ai.onnx")


@dataclass(frozen=True)
class TensorRTTarget:
    """One TensorRT version family: the operators its ONNX parser takes and its opset range."""

    name: str
    description: str
    max_opset: int
    operators: frozenset[str]
    source: str

    def supports(self, op_type: str, domain: str = "") -> bool:
        return domain in DEFAULT_DOMAINS and op_type in self.operators


TARGETS: dict[str, TensorRTTarget] = {
    target.name: target
    for target in (
        TensorRTTarget("trt-10.3", "TensorRT 10.3 (JetPack 6)", 20, _TRT_10_3,
                       "onnx-tensorrt branch 10.1-GA: docs/operators.md + CHANGELOG.md 10.2/10.3"),
        TensorRTTarget("trt-10.15", "TensorRT 10.15 (newest 10.x, desktop)", 24, _TRT_10_3 | _ADDED_BY_10_15,
                       "onnx-tensorrt branch main: docs/operators.md (10.15 GA)"),
        TensorRTTarget("trt-11", "TensorRT 11.x", 24, _TRT_10_3 | _ADDED_BY_10_15 | _ADDED_BY_11,
                       "onnx-tensorrt 10.15 table + 11.2 release notes (DFT)"),
    )
}


@dataclass
class ParseCheck:
    """The operators of one graph a target's parser would refuse; truthy when there are none."""

    target: str
    path: str
    opset: int
    op_counts: dict[str, int]
    unsupported: dict[str, int] = field(default_factory=dict)
    opset_too_new: bool = False

    def __bool__(self) -> bool:
        return not self.unsupported and not self.opset_too_new

    def describe(self) -> str:
        if self:
            return f"{self.path}: every op parses on {self.target}"
        problems = [f"{op} x{n}" for op, n in sorted(self.unsupported.items())]
        if self.opset_too_new:
            problems.append(f"opset {self.opset} > {TARGETS[self.target].max_opset}")
        return f"{self.path}: {self.target} cannot parse {', '.join(problems)}"


def iter_nodes(graph: Any) -> Iterator[Any]:
    """Every node of a graph, including the bodies of If/Loop/Scan subgraphs."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from iter_nodes(attr.g)
            for sub in attr.graphs:
                yield from iter_nodes(sub)


def op_counts(model: Any) -> Counter[str]:
    """``domain:op`` (default domain: ``op``) -> count over the graph and its subgraphs."""
    return Counter(f"{n.domain}:{n.op_type}" if n.domain not in DEFAULT_DOMAINS else n.op_type
                   for n in iter_nodes(model.graph))


def _op_and_domain(key: str) -> tuple[str, str]:
    """``"com.microsoft:FusedMatMul"`` -> ("FusedMatMul", "com.microsoft"); ``"Add"`` -> ("Add", "")."""
    domain, _, op = key.rpartition(":")
    return op, domain


def default_opset(model: Any) -> int:
    return max((int(o.version) for o in model.opset_import if o.domain in DEFAULT_DOMAINS), default=0)


def check_model(path: Path | str, targets: Iterable[str] = tuple(TARGETS)) -> list[ParseCheck]:
    """Check one ONNX file (graph only; external weights are never read) against each target."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    counts, opset = op_counts(model), default_opset(model)
    checks = []
    for name in targets:
        target = TARGETS[name]
        unsupported = {key: n for key, n in counts.items() if not target.supports(*_op_and_domain(key))}
        checks.append(ParseCheck(name, str(path), opset, dict(counts), unsupported, opset > target.max_opset))
    return checks


def parse_report(paths: dict[str, Path], targets: Iterable[str] = tuple(TARGETS)) -> dict[str, Any]:
    """``{target: {"parses": bool, "unsupported": {component: {op: count}}}}`` over some graphs."""
    checks = {component: check_model(path, targets) for component, path in paths.items()}
    report: dict[str, Any] = {}
    for name in targets:
        per_component = {component: next(c for c in found if c.target == name) for component, found in checks.items()}
        report[name] = {
            "parses": all(per_component.values()),
            "unsupported": {component: c.unsupported for component, c in per_component.items() if c.unsupported},
            "opset_too_new": sorted(component for component, c in per_component.items() if c.opset_too_new),
        }
    return report


__all__ = ["TARGETS", "ParseCheck", "TensorRTTarget", "check_model", "default_opset", "iter_nodes", "op_counts", "parse_report"]
