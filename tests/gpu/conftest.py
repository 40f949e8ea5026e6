"""GPU tests: the real TensorRT wheel and a CUDA GPU, e.g. inside the Docker image (`make test-gpu`).

On a machine without them every test here is skipped, and the skip reason is the same one-line
message the CLI gives (what is missing and how to get it). The check runs once per session,
before any expensive session fixture (export, engine builds).
"""

from __future__ import annotations

import functools

import pytest


@functools.lru_cache(maxsize=1)
def gpu_unavailable_reason() -> str | None:
    from trt_pipeline.engine.tensorrt_import import require_tensorrt
    from trt_pipeline.errors import TensorRTUnavailableError

    try:
        require_tensorrt()
    except TensorRTUnavailableError as error:
        return f"GPU test needs TensorRT and a CUDA GPU: {error.render()}"
    try:
        import torch
    except ImportError:
        return "GPU test needs PyTorch (the runner's device buffers and the torch reference)"
    if not torch.cuda.is_available():
        return "GPU test needs a CUDA build of PyTorch for the runner's device buffers (pip install torch from the CUDA index)"
    return None


@pytest.fixture(scope="session", autouse=True)
def _require_tensorrt_and_gpu() -> None:
    reason = gpu_unavailable_reason()
    if reason:
        pytest.skip(reason)
