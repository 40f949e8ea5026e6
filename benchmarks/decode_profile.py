"""Node-by-node ONNX Runtime profile of one decode step of any decoder graph (ours or genai's).

Runs a decoder ONNX file in plain ``onnxruntime.InferenceSession`` (genai's ``model.onnx`` too: it
only uses ``com.microsoft`` contrib ops, which the CPU provider has) with ``enable_profiling``,
at one cached-context length, same threads for every graph, and reports per op type: kernel time
per step, node count and, for MatMul-like nodes with a constant weight, the bytes that weight
holds and the bandwidth the kernel reached streaming it (bytes / kernel time). That separates
"our MatMuls are slower per byte" from "we have more bytes / more nodes / more glue".

Inputs are made from the graph's declared inputs: ``inputs_embeds`` / ``input_ids`` for one new
token, ``attention_mask`` over context + 1, ``past_key_values.*`` of ``context`` positions (zeros
do not change the timing of dense kernels), rope tables of one position, ``logits_positions`` [0].

    python benchmarks/decode_profile.py MODEL.onnx [MODEL2.onnx ...] [--context 512] [--threads 2]
        [--steps 30] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

MATMUL_OPS = ("MatMul", "Gemm", "FusedMatMul", "MatMulNBits", "FusedGemm")
NUMPY = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
         "tensor(int32)": np.int32, "tensor(bool)": np.bool_}


def dim(value: Any, context: int, named: dict[str, int]) -> int:
    """A concrete size for a symbolic input axis at decode (one new token, ``context`` cached)."""
    if isinstance(value, int):
        return value
    name = str(value)
    if name in named:
        return named[name]
    if "past" in name:
        return context
    if "total" in name:
        return context + 1
    return 1  # batch, sequence_length, num_logits


def decode_feed(session: Any, context: int, named: dict[str, int]) -> dict[str, np.ndarray]:
    feed = {}
    rng = np.random.default_rng(0)
    for node in session.get_inputs():
        shape = [dim(d, context, named) for d in node.shape]
        dtype = NUMPY[node.type]
        if node.name == "attention_mask":
            feed[node.name] = np.ones(shape, dtype)
        elif node.name in ("logits_positions", "input_ids", "position_ids"):
            feed[node.name] = np.zeros(shape, dtype) + (context if node.name == "position_ids" else 0)
        else:
            feed[node.name] = rng.standard_normal(shape).astype(dtype) * 0.1
    return feed


def weight_bytes_by_node(model_path: Path) -> dict[str, int]:
    """Node name -> bytes of its constant (initializer) inputs, for the graph ORT actually ran."""
    import onnx

    from trt_pipeline.bench.roofline import ONNX_4BIT_DTYPES, ONNX_DTYPE_BYTES

    graph = onnx.load(str(model_path), load_external_data=False).graph
    sizes = {}
    for init in graph.initializer:
        count = int(np.prod(init.dims)) if init.dims else 1
        sizes[init.name] = (count + 1) // 2 if init.data_type in ONNX_4BIT_DTYPES else count * ONNX_DTYPE_BYTES.get(
            init.data_type, 4)
    return {node.name: sum(sizes.get(name, 0) for name in node.input) for node in graph.node}


def profile(model: Path, context: int, threads: int, steps: int, named: dict[str, int], warmup: int = 5) -> dict[str, Any]:
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        optimized = Path(tmp) / "optimized.onnx"
        options.optimized_model_filepath = str(optimized)
        options.add_session_config_entry("session.optimized_model_external_initializers_file_name", "optimized.onnx.data")
        options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "trace")
        session = ort.InferenceSession(str(model), sess_options=options, providers=["CPUExecutionProvider"])
        feed = decode_feed(session, context, named)
        for _ in range(warmup):
            session.run(None, feed)
        wall = []
        for _ in range(steps):
            start = time.perf_counter()
            session.run(None, feed)
            wall.append(time.perf_counter() - start)
        trace = json.loads(Path(session.end_profiling()).read_text())
        weights = weight_bytes_by_node(optimized)
    return summarize(trace, steps, weights) | {"model": str(model), "context": context, "threads": threads,
                                                "steps": steps, "wall_ms_median": round(statistics.median(wall) * 1e3, 3)}


def summarize(trace: list[dict[str, Any]], steps: int, weights: dict[str, int]) -> dict[str, Any]:
    runs = sorted((float(e["ts"]), float(e["ts"]) + float(e["dur"])) for e in trace
                  if e.get("cat") == "Session" and e.get("name") == "model_run")[-steps:]
    per_op: dict[str, float] = defaultdict(float)
    nodes: dict[str, set[str]] = defaultdict(set)
    per_node: dict[str, float] = defaultdict(float)
    node_op: dict[str, str] = {}
    for event in trace:
        name = str(event.get("name", ""))
        if event.get("cat") != "Node" or not name.endswith("_kernel_time"):
            continue
        if not any(start <= float(event["ts"]) <= end for start, end in runs):
            continue
        op = event.get("args", {}).get("op_name", "?")
        node = name[: -len("_kernel_time")]
        per_op[op] += float(event["dur"])
        nodes[op].add(node)
        per_node[node] += float(event["dur"])
        node_op[node] = op
    total = sum(per_op.values()) or 1.0
    step_us = sum(e - s for s, e in runs) / max(len(runs), 1)
    matmul_bytes = sum(weights.get(n, 0) for n, op in node_op.items() if op in MATMUL_OPS)
    matmul_us = sum(per_op[op] for op in MATMUL_OPS) / max(len(runs), 1)
    by_shape: dict[str, list[float]] = defaultdict(list)
    for node, us in per_node.items():
        if node_op[node] in MATMUL_OPS and weights.get(node):
            by_shape[f"{node_op[node]} {weights[node]} B"].append(us / len(runs))
    return {
        "model_run_us": round(step_us, 1),
        "kernel_us": round(total / len(runs), 1),
        "by_op": [{"op": op, "nodes": len(nodes[op]), "us": round(us / len(runs), 1), "share": round(us / total, 4)}
                  for op, us in sorted(per_op.items(), key=lambda item: -item[1])],
        "matmul_weight_bytes": matmul_bytes,
        "matmul_us": round(matmul_us, 1),
        "matmul_gbps": round(matmul_bytes / (matmul_us * 1e3), 2) if matmul_us else None,
        "matmul_by_weight": {key: {"nodes": len(v), "us_each": round(statistics.median(v), 1),
                                   "gbps": round(int(key.split()[1]) / (statistics.median(v) * 1e3), 2)}
                             for key, v in sorted(by_shape.items())},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--context", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds over the models")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--dim", action="append", default=["kv_cache_dim=64"],
                        help="NAME=SIZE for a symbolic input axis (genai's kv_cache_dim is the head size)")
    args = parser.parse_args(argv)
    results: dict[str, list[dict[str, Any]]] = defaultdict(list)
    uptime = [subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()]
    named = {key: int(value) for key, value in (item.split("=") for item in args.dim)}
    for _ in range(args.rounds):
        for model in args.models:
            result = profile(model, args.context, args.threads, args.steps, named)
            results[str(model)].append(result)
            print(json.dumps({k: v for k, v in result.items() if k != "by_op"}), file=sys.stderr)
            for row in result["by_op"][:14]:
                print(f"  {row['op']:36s} n={row['nodes']:4d} {row['us']:9.1f} us {row['share'] * 100:5.1f} %",
                      file=sys.stderr)
    uptime.append(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    if args.json:
        args.json.write_text(json.dumps({"uptime": uptime, "onnxruntime": __import__("onnxruntime").__version__,
                                         "results": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
