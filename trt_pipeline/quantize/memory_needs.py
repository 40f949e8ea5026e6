"""Whether a stage that loads whole ONNX graphs can fit in this machine's memory, asked before it starts.

ModelOpt's AWQ, the calibration feeds (the fp32 graphs run in ONNX Runtime) and the accuracy gates each
hold at least the weights of the graphs they load. For the real 9B's fp32 decoder that is 35 GB: on a
24 GiB machine the kernel would kill the run after minutes of work. The stages compare the graphs'
stored bytes with :func:`~trt_pipeline.export.twin.available_memory` first and refuse with what to
run instead (each caller words its own error); the stored bytes are a lower bound, so no run that could
fit is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import onnx

from trt_pipeline.graph.autocast import external_data_files


def stored_bytes(path: Path) -> int:
    """Bytes of an ONNX file and the external data files its initializers name."""
    folder = path.parent
    files = [folder / name for name in external_data_files(onnx.load(str(path), load_external_data=False))]
    return path.stat().st_size + sum(file.stat().st_size for file in files if file.is_file())


def memory_shortfall(graphs: Sequence[Path]) -> tuple[int, int] | None:
    """(stored bytes of the existing ``graphs``, memory available) when the first exceeds the second, else None."""
    from trt_pipeline.export.twin import available_memory

    present = [graph for graph in graphs if graph.is_file()]
    if not present:
        return None
    size, available = sum(stored_bytes(graph) for graph in present), available_memory()
    return (size, available) if size > available else None


__all__ = ["memory_shortfall", "stored_bytes"]
