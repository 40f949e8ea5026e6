"""Accuracy comparisons against the PyTorch reference (transformers), as a CI gate.

``compare(out_dir, CompareConfig(...)) -> CompareReport`` runs every available backend
(torch-export, ONNX Runtime fp32/fp16/int8, TensorRT engines) on identical inputs through
Polygraphy's ``Comparator``, checks per-precision gates (max abs, cosine, p99 relative error) and
greedy-token agreement, writes JSON/Markdown/PNG reports and raises ``AccuracyError`` on failure.
Submodules import torch/transformers lazily through :func:`compare`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["compare"]


def compare(*args: Any, **kwargs: Any) -> Any:
    """See :func:`trt_pipeline.compare.run.compare`."""
    from trt_pipeline.compare.run import compare as _compare

    return _compare(*args, **kwargs)
