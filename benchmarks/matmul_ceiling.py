"""The attainable decode ceiling on this machine: one fp32 MatMul of each decoder shape (M = 1) in ONNX Runtime.

A decode step of the small preset is ~80 % MatMul over weights far larger than the caches, so no
decoder graph can stream its weights faster than ONNX Runtime's own GEMV streams one weight. This
script measures that, next to the bench's bandwidth figure (``trt_pipeline.bench.bandwidth``), in
the same run:

* per weight shape ``K x N`` of the decoder (q/o 768x768, k/v 768x128, gate_up 768x5120, down
  2560x768, LM head 768x2304 on the small preset, read from the exported ``decoder.onnx``), a graph
  of independent ``[1, K] x [K, N]`` MatMuls whose weights together exceed the last-level cache
  (>= ``--min-mib``), timed per run (CPU time of the one thread for ``--threads 1``, wall clock
  otherwise): GB/s = weight bytes / time;
* the decoder's own MatMul mix: every weight of the decoder once (the MatMul share of a step with
  no glue, no attention, no host work);
* the bench's bandwidth measurement (copy and read, 1 thread CPU-timed) for the roofline denominator.

Writes ``benchmarks/results/matmul_ceiling.json`` (with ``uptime`` before and after).

    flock /tmp/bench.lock python benchmarks/matmul_ceiling.py EXPORT_DIR [--threads 1] [--min-mib 128]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def decoder_matmul_shapes(decoder: Path) -> Counter:
    """(K, N) of every MatMul whose second input is a 2-D fp32 initializer, with how often it occurs."""
    import onnx

    graph = onnx.load(str(decoder), load_external_data=False).graph
    dims = {t.name: tuple(t.dims) for t in graph.initializer if len(t.dims) == 2 and t.data_type == 1}
    return Counter(dims[n.input[1]] for n in graph.node if n.op_type == "MatMul" and n.input[1] in dims)


def matmul_graph(shapes: list[tuple[int, int]]) -> Any:
    """Independent ``x_i [1, K_i] @ w_i [K_i, N_i]`` MatMuls (one output each), random fp32 weights."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, inputs, outputs = [], [], [], []
    for index, (k, n) in enumerate(shapes):
        inits.append(numpy_helper.from_array((rng.standard_normal((k, n)) * 0.02).astype(np.float32), f"w{index}"))
        inputs.append(helper.make_tensor_value_info(f"x{index}", TensorProto.FLOAT, [1, k]))
        outputs.append(helper.make_tensor_value_info(f"y{index}", TensorProto.FLOAT, [1, n]))
        nodes.append(helper.make_node("MatMul", [f"x{index}", f"w{index}"], [f"y{index}"]))
    graph = helper.make_graph(nodes, "matmuls", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def time_graph(model: Any, threads: int, iterations: int) -> dict[str, float]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feed = {i.name: np.ones([d if isinstance(d, int) else 1 for d in i.shape], np.float32) for i in session.get_inputs()}
    clock = time.thread_time if threads == 1 else time.perf_counter
    for _ in range(3):
        session.run(None, feed)
    samples = []
    for _ in range(iterations):
        start = clock()
        session.run(None, feed)
        samples.append(clock() - start)
    return {"median_s": statistics.median(samples), "best_s": min(samples)}


def measure_shape(k: int, n: int, threads: int, min_bytes: int, iterations: int) -> dict[str, Any]:
    copies = max(1, math.ceil(min_bytes / (k * n * 4)))
    timing = time_graph(matmul_graph([(k, n)] * copies), threads, iterations)
    size = copies * k * n * 4
    return {"k": k, "n": n, "copies": copies, "bytes": size, "median_ms": round(timing["median_s"] * 1e3, 3),
            "gbps_median": round(size / timing["median_s"] / 1e9, 2), "gbps_best": round(size / timing["best_s"] / 1e9, 2)}


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main(argv: list[str] | None = None) -> int:
    from trt_pipeline.bench.bandwidth import measure_bandwidth

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("export", type=Path, help="an export folder (its onnx/fp32/decoder.onnx gives the shapes)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--min-mib", type=int, default=128, help="weights per timed graph (beyond the last-level cache)")
    parser.add_argument("--iterations", type=int, default=15)
    parser.add_argument("--json", type=Path, default=RESULTS / "matmul_ceiling.json")
    args = parser.parse_args(argv)
    before = uptime()
    shapes = decoder_matmul_shapes(args.export / "onnx" / "fp32" / "decoder.onnx")
    clock = "cpu" if args.threads == 1 else "wall"
    bandwidth = measure_bandwidth(256, 5, args.threads, clock=clock)
    per_shape = [measure_shape(k, n, args.threads, args.min_mib * 2**20, args.iterations) for k, n in sorted(shapes)]
    mix = [shape for shape, count in shapes.items() for _ in range(count)]
    mix_timing = time_graph(matmul_graph(mix), args.threads, args.iterations)
    mix_bytes = sum(k * n * 4 for k, n in mix)
    result = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "python benchmarks/matmul_ceiling.py " + " ".join(argv or sys.argv[1:]),
        "onnxruntime": __import__("onnxruntime").__version__,
        "threads": args.threads, "clock": "thread CPU time" if clock == "cpu" else "wall",
        "uptime": {"before": before, "after": uptime()},
        "bandwidth": bandwidth.to_dict(),
        "roofline_bandwidth_gbps": max(bandwidth.copy_gbps_1t, bandwidth.read_gbps_1t) if clock == "cpu"
        else bandwidth.best_gbps,
        "per_shape": per_shape,
        "decoder_mix": {"matmuls": len(mix), "bytes": mix_bytes, "median_ms": round(mix_timing["median_s"] * 1e3, 3),
                        "gbps_median": round(mix_bytes / mix_timing["median_s"] / 1e9, 2),
                        "gbps_best": round(mix_bytes / mix_timing["best_s"] / 1e9, 2)},
    }
    result["decoder_mix"]["fraction_of_roofline_bandwidth"] = round(
        result["decoder_mix"]["gbps_median"] / result["roofline_bandwidth_gbps"], 3)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "per_shape"}, indent=1))
    for row in per_shape:
        print(f"  {row['k']:5d} x {row['n']:5d}: {row['gbps_median']:6.1f} GB/s median, {row['gbps_best']:6.1f} best")
    return 0


if __name__ == "__main__":
    sys.exit(main())
