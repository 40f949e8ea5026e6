"""The operators an app's ONNX Runtime must have: ``required_operators.config`` for a reduced build.

ONNX Runtime's Android package holds every operator; an app that builds ONNX Runtime itself can keep
only the kernels its models use (``build.sh --include_ops_by_config FILE``; format: one line per
domain and opset, ``ai.onnx;18;Add,Cast,...``). The list must cover the graph ONNX Runtime RUNS, not
only the file: at load its optimizer fuses nodes into ``com.microsoft`` kernels (int4's
``DequantizeLinear`` + ``MatMul`` into ``MatMulNBits``, residual adds + norms into
``SkipSimplifiedLayerNormalization``, ...). So the list is the union of the shipped graph's operators
and those of the graph ONNX Runtime optimises it into at the ``extended`` level (the fusions that do
not depend on the CPU; the app should not ask for more), measured here on a saved copy of it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from pathlib import Path

from trt_pipeline.engine.onnx_ops import DEFAULT_DOMAINS, iter_nodes

CONFIG_FILE = "required_operators.config"
#: The graph optimisation level the config (and the app's session) assumes.
OPTIMIZATION_LEVEL = "extended"

OperatorSet = dict[tuple[str, int], set[str]]  # (domain, opset) -> op types


def graph_operators(model: object) -> OperatorSet:
    """(domain as ONNX Runtime names it, the model's opset of that domain) -> op types, subgraphs included."""
    opsets = {("ai.onnx" if o.domain in DEFAULT_DOMAINS else o.domain): int(o.version) for o in model.opset_import}
    found: OperatorSet = {}
    for node in iter_nodes(model.graph):
        domain = "ai.onnx" if node.domain in DEFAULT_DOMAINS else node.domain
        found.setdefault((domain, opsets.get(domain, 1)), set()).add(node.op_type)
    return found


def optimized_operators(path: Path, level: str = OPTIMIZATION_LEVEL) -> OperatorSet:
    """The operators of ``path`` as ONNX Runtime's CPU provider runs it after ``level`` optimisation
    (the optimised graph is saved to a temporary folder, read without its weights, and removed)."""
    import onnx

    from trt_pipeline.runtime.onnxruntime_runner import OrtSettings, session

    with tempfile.TemporaryDirectory(prefix="ort-optimized-", dir=path.parent) as scratch:
        saved = Path(scratch) / "optimized.onnx"
        session(path, settings=OrtSettings(intra_op_threads=1, optimization=level), optimized_model_path=saved)
        return graph_operators(onnx.load(str(saved), load_external_data=False))


def required_operators(graphs: Iterable[Path], *, optimized: bool = True) -> OperatorSet:
    """Union over ``graphs`` of their own operators and (``optimized``) those of their optimised graphs."""
    import onnx

    union: OperatorSet = {}
    for path in graphs:
        sets = [graph_operators(onnx.load(str(path), load_external_data=False))]
        if optimized:
            sets.append(optimized_operators(path))
        for found in sets:
            for key, ops in found.items():
                union.setdefault(key, set()).update(ops)
    return union


def config_text(operators: OperatorSet, sources: Iterable[str]) -> str:
    """ONNX Runtime's reduced-build config format (as ``create_reduced_build_config.py`` writes it)."""
    lines = ["# Operators of (and ONNX Runtime's extended-level optimisation of) these models:"]
    lines += [f"# - {name}" for name in sources]
    lines += [f"{domain};{opset};{','.join(sorted(ops))}" for (domain, opset), ops in sorted(operators.items())]
    return "\n".join(lines) + "\n"


__all__ = ["CONFIG_FILE", "OPTIMIZATION_LEVEL", "config_text", "graph_operators", "optimized_operators",
           "required_operators"]
