"""One torch thread for host work in processes where ONNX Runtime or TensorRT runs the model.

The host side of a step (embedding rows, M-RoPE tables, masks, sampling) is a few tiny torch ops.
With torch's default thread pool (one OpenMP thread per core) their worker threads keep spinning
after each op and are scheduled against ONNX Runtime's own intra-op threads, which then wait for a
core: on the 2-core bench machine, a small-preset prefill of 16 tokens took 22 ms through the
stepper against 16.5 ms for the same graph fed the same arrays, and 17.0 ms once torch used one
thread (2 ORT threads, wall clock, quiet machine); a 4-row embedding lookup took 40 ms on a loaded
host instead of 3 us. So every process that feeds ONNX Runtime or TensorRT from torch pins torch
to one thread: the server, ``generate``, and the benchmark's ONNX Runtime / TensorRT backends (so
that the benchmark times what the server runs).
"""

from __future__ import annotations


def single_thread_host_torch() -> None:
    """Pin this process's torch to one intra-op thread (its host ops are tiny; see the module docstring)."""
    import torch

    torch.set_num_threads(1)


__all__ = ["single_thread_host_torch"]
