"""Node counts of an exported graph as written and as ONNX Runtime runs it (after its optimizer).

The second count is what a decode step pays per-node overhead for; it also shows which fusions
ONNX Runtime applied (``SimplifiedLayerNormalization``, ``com.microsoft:FusedMatMul``, ...). The
optimised graph is written by ONNX Runtime itself (``SessionOptions.optimized_model_filepath``)
into a temporary folder, weights to a side file, and only its protobuf is read back.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any


def graph_stats(path: Path | str, settings: Any = None) -> dict[str, Any]:
    """``{"exported": {...}, "onnxruntime_optimized": {...}}``: node total and count per op of each."""
    import onnx

    from trt_pipeline.engine.onnx_ops import op_counts
    from trt_pipeline.runtime.onnxruntime_runner import OrtSettings, session

    def summary(model: Any) -> dict[str, Any]:
        counts = op_counts(model)
        return {"nodes": sum(counts.values()), "ops": dict(counts.most_common())}

    exported = summary(onnx.load(str(path), load_external_data=False))
    with tempfile.TemporaryDirectory(prefix="ort-optimized-") as tmp:
        optimized = Path(tmp) / "optimized.onnx"
        session(path, settings=settings or OrtSettings(intra_op_threads=1), optimized_model_path=optimized)
        result = summary(onnx.load(str(optimized), load_external_data=False))
    return {"exported": exported, "onnxruntime_optimized": result}


__all__ = ["graph_stats"]
