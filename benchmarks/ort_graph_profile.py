"""Where a decode step's time goes inside ONNX Runtime: kernels vs the executor around them.

Used by both workers of ``benchmarks/peer_genai.py`` (it needs only numpy and onnxruntime, so it runs
in the project's venv and in the separate genai venv alike). One decoder graph is loaded in a plain
``InferenceSession`` (one intra-op thread, ORT's profiler on) and run on one decode-step feed at a
given number of cached tokens, the cache bound the way the graph's own runtime binds it:

* every ``present.X`` whose shape equals its ``past_key_values.X`` (our ``--kv-cache inplace``
  decoder; genai's decoder with its shared ``max_length`` buffer) is bound to that input's memory;
* any other output is left to ONNX Runtime (our ``concat`` decoder's growing cache).

The profile gives, per run: the kernel time of every node (summed by op type), the run's own
duration, and their difference: the executor's work between kernels (per-node dispatch, output
allocation, shape checks), which grows with the number of nodes, not with the model's size.
The profiler itself adds a little per node, so ``outside_kernels_us`` is an upper bound; the
comparison between two graphs profiled the same way is what it is for.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

#: integer inputs either decoder takes, and their value for one decode step at ``context`` cached tokens
INT_INPUTS = {
    "input_ids": lambda context: np.array([[17]], np.int64),
    "attention_mask": lambda context: np.ones((1, context + 1), np.int64),
    "logits_positions": lambda context: np.zeros(1, np.int64),
    "position_ids": lambda context: np.array([[context]], np.int64),
}


def decode_dims(context: int, overrides: dict[str, int] | None = None) -> dict[str, int]:
    """Sizes of the symbolic axes of one decode step: one new token after ``context`` cached ones."""
    dims = {"batch_size": 1, "sequence_length": 1, "past_sequence_length": context,
            "total_sequence_length": context + 1}
    dims.update(overrides or {})
    return dims


def decode_feed(session: Any, context: int, overrides: dict[str, int] | None = None) -> dict[str, np.ndarray]:
    """Random (seeded) float inputs and exact integer inputs of one decode step, by input name and shape."""
    dims, rng, feed = decode_dims(context, overrides), np.random.default_rng(0), {}
    for node in session.get_inputs():
        if node.name in INT_INPUTS:
            feed[node.name] = INT_INPUTS[node.name](context)
            continue
        shape = [dims[d] if isinstance(d, str) else int(d) for d in node.shape]
        dtype = np.float16 if node.type == "tensor(float16)" else np.float32
        feed[node.name] = (rng.standard_normal(shape) * 0.1).astype(dtype)
    return feed


def bind(session: Any, feed: dict[str, np.ndarray], share_buffer: bool = False) -> tuple[Any, list[str]]:
    """IO binding of ``feed``; every in-place cache output bound to its input's memory (with
    ``share_buffer``: every ``present.X``, as genai binds its ``max_length`` buffers). -> (binding, aliased outputs)."""
    binding, aliased = session.io_binding(), []
    inputs = {node.name: node for node in session.get_inputs()}
    for name, value in feed.items():
        binding.bind_cpu_input(name, value)
    for node in session.get_outputs():
        source = inputs.get(node.name.replace("present.", "past_key_values.", 1))
        if node.name.startswith("present.") and source is not None and (share_buffer or list(source.shape) == list(node.shape)):
            value = feed[source.name]
            binding.bind_output(node.name, "cpu", 0, value.dtype.type, value.shape, value.ctypes.data)
            aliased.append(node.name)
        else:
            binding.bind_output(node.name, "cpu")
    return binding, aliased


def split_profile(trace: list[dict[str, Any]], runs: int, top: int = 10) -> dict[str, Any]:
    """Per run (the last ``runs``): run time, kernel time and their difference; medians over runs (µs),
    the nodes per run and the kernel time per op type (mean per run)."""
    spans = sorted((float(e["ts"]), float(e["dur"])) for e in trace
                   if e.get("cat") == "Session" and e.get("name") == "model_run")[-runs:]
    per_run = [0.0] * len(spans)
    per_op: dict[str, float] = defaultdict(float)
    nodes = 0
    for event in trace:
        if event.get("cat") != "Node" or not str(event.get("name", "")).endswith("_kernel_time"):
            continue
        at = float(event["ts"])
        index = next((i for i, (begin, duration) in enumerate(spans) if begin <= at <= begin + duration), None)
        if index is None:
            continue
        per_run[index] += float(event["dur"])
        per_op[event.get("args", {}).get("op_name", "?")] += float(event["dur"])
        nodes += 1
    count = len(spans)
    outside = statistics.median(duration - kernels for (_, duration), kernels in zip(spans, per_run))
    ranked = sorted(per_op.items(), key=lambda item: -item[1])
    return {"runs": count, "nodes_per_run": round(nodes / count, 1),
            "run_us": round(statistics.median(duration for _, duration in spans), 1),
            "kernels_us": round(statistics.median(per_run), 1), "outside_kernels_us": round(outside, 1),
            "outside_per_node_us": round(outside / max(nodes / count, 1), 2),
            "top": [{"op_type": op, "us": round(us / count, 1)} for op, us in ranked[:top]]}


def profile_decode_graph(path: str, context: int, *, overrides: dict[str, int] | None = None,
                         share_buffer: bool = False, runs: int = 50, warmup: int = 20, threads: int = 1) -> dict[str, Any]:
    """Profile one decode step of the graph at ``path`` (see the module docstring); also its unprofiled
    median time per run (a second session without the profiler, same feed): CPU time of the calling
    thread with one intra-op thread, wall time with more (the others' work is not on that thread)."""
    import onnxruntime as ort

    def session(profile_prefix: str | None) -> Any:
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        if profile_prefix:
            options.enable_profiling = True
            options.profile_file_prefix = profile_prefix
        return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    plain = session(None)
    feed = decode_feed(plain, context, overrides)
    binding, aliased = bind(plain, feed, share_buffer)
    for _ in range(warmup):
        plain.run_with_iobinding(binding)
    samples = []
    clock = time.thread_time_ns if threads == 1 else time.perf_counter_ns
    for _ in range(runs):
        begin = clock()
        plain.run_with_iobinding(binding)
        samples.append((clock() - begin) / 1e3)
    del binding, plain
    with tempfile.TemporaryDirectory() as tmp:
        profiled = session(str(Path(tmp) / "decode"))
        binding, _ = bind(profiled, feed, share_buffer)
        for _ in range(warmup + runs):
            profiled.run_with_iobinding(binding)
        trace = json.loads(Path(profiled.end_profiling()).read_text())
    return {"path": path, "context": context, "onnxruntime": ort.__version__, "aliased_outputs": len(aliased),
            "threads": threads, "clock": "thread CPU" if threads == 1 else "wall",
            "unprofiled_us": round(statistics.median(samples), 1), **split_profile(trace, runs)}


def interleaved_graph_times(graphs: dict[str, dict[str, Any]], context: int, *, rounds: int = 9, runs: int = 40,
                            warmup: int = 20, threads: int = 1) -> dict[str, Any]:
    """Several decoder graphs in ONE process and ONE onnxruntime, one decode step each, timed in turns.

    ``graphs``: name -> ``{"path", "overrides", "share_buffer"}`` (as :func:`profile_decode_graph` takes
    them). Every round times ``runs`` steps of each graph, the order rotating; a graph's figure is the
    median over rounds of its round medians, and ``speed_vs[a][b]`` the median over rounds of the
    per-round ratio ``b / a`` (> 1: ``a`` faster). Run from two venvs, two graphs also meet two ORT
    versions and two machine moments; here they meet neither, so only the graphs differ.
    """
    import onnxruntime as ort

    bound: dict[str, Any] = {}
    for name, graph in graphs.items():
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        session = ort.InferenceSession(graph["path"], options, providers=["CPUExecutionProvider"])
        feed = decode_feed(session, context, graph.get("overrides"))
        binding, _ = bind(session, feed, graph.get("share_buffer", False))
        for _ in range(warmup):
            session.run_with_iobinding(binding)
        bound[name] = (session, binding, feed)
    clock = time.thread_time_ns if threads == 1 else time.perf_counter_ns
    names, per_round = list(bound), {name: [] for name in bound}
    for index in range(rounds):
        for name in names[index % len(names):] + names[:index % len(names)]:
            session, binding, _ = bound[name]
            samples = []
            for _ in range(runs):
                begin = clock()
                session.run_with_iobinding(binding)
                samples.append((clock() - begin) / 1e3)
            per_round[name].append(statistics.median(samples))
    speed = {a: {b: round(statistics.median(y / x for x, y in zip(per_round[a], per_round[b])), 3)
                 for b in names if b != a} for a in names}
    return {"context": context, "onnxruntime": ort.__version__, "threads": threads, "rounds": rounds,
            "runs_per_round": runs, "clock": "thread CPU" if threads == 1 else "wall",
            "median_us": {name: round(statistics.median(values), 1) for name, values in per_round.items()},
            "speed_vs": speed, "rounds_us": {name: [round(v, 1) for v in values] for name, values in per_round.items()}}


__all__ = ["decode_dims", "decode_feed", "interleaved_graph_times", "profile_decode_graph", "split_profile"]
