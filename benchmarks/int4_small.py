"""INT4 on ONNX Runtime (small preset): is the int4 decoder fused into MatMulNBits, and how fast does it decode?

Steps (each reused when its output exists):

1. ``init-checkpoint --preset small`` + ``export --max-seq 320 --max-kv 512 --no-validate`` in ``--work``
   (the same work folder as ``bench_small.py``);
2. ``precision int4 --activations fp32`` -> ``export/onnx/int4`` (the ONNX Runtime CPU flavour) and the
   TensorRT flavour (``--activations fp16``) beside it in ``int4-fp16/decoder.onnx``;
3. ONNX Runtime's optimized graph of each int4 flavour: how many of the int4 MatMuls became
   ``com.microsoft.MatMulNBits`` (:func:`trt_pipeline.quantize.int4.ort_fused_matmuls`);
4. decode step latency (one new token, a filled cache of 64 and 512 tokens) of fp32 and both int4
   flavours, each in its own ORT session with the same thread settings as ``autoglm-trt bench``,
   **interleaved** round by round (the machine is shared: ratios from one run, medians over rounds),
   with ``uptime``'s load recorded.

Writes ``benchmarks/results/int4_small.json``.

    python benchmarks/int4_small.py [--threads 2] [--rounds 7] [--steps 20] [--method awq]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def ensure_export(work: Path) -> Path:
    from trt_pipeline.config import ExportConfig
    from trt_pipeline.export.exporter import export
    from trt_pipeline.fixtures.checkpoint_factory import write_checkpoint

    checkpoint, out = work / "checkpoint", work / "export"
    if not (checkpoint / "config.json").is_file():
        write_checkpoint(checkpoint, preset="small", seed=0, overwrite=True)
    if not (out / "export.json").is_file():
        export(checkpoint, out, ExportConfig(max_seq=320, max_kv=512, validate=False))
    return out


def ensure_int4(out: Path, work: Path, method: str) -> dict[str, Path]:
    """The ORT flavour as OUT/onnx/int4 (a normal variant folder) and the TensorRT flavour beside it."""
    from trt_pipeline.artifacts.manifests import read_export_manifest
    from trt_pipeline.config.int4 import Int4Config
    from trt_pipeline.quantize.calibration_reader import CalibrationReader
    from trt_pipeline.quantize.dataset import load_split
    from trt_pipeline.quantize.int4 import quantize_int4_file
    from trt_pipeline.quantize.precision import calibration_folders, make_int4

    if not (out / "onnx" / "int4" / "manifest.json").is_file():
        make_int4(out, Int4Config(method=method, activations="fp32", evaluate=False))
    fp16 = work / "int4-fp16" / "decoder.onnx"
    if not fp16.is_file():
        calib_dir, _ = calibration_folders(None)
        feeds = CalibrationReader(out, load_split(calib_dir), 16).feeds("decoder")
        inputs = read_export_manifest(out).components["decoder"].inputs
        quantize_int4_file(out / "onnx" / "fp32" / "decoder.onnx", fp16, feeds, inputs=inputs, method=method,
                           activations="fp16")
    return {"fp32": out / "onnx" / "fp32" / "decoder.onnx", "int4-fp32act": out / "onnx" / "int4" / "decoder.onnx",
            "int4-fp16act": fp16}


def decode_feed(out: Path, context: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One decode step's inputs: one token over a cache of ``context`` tokens (values random, shapes real)."""
    from trt_pipeline.artifacts.manifests import read_export_manifest

    sizes = {"batch_size": 1, "sequence_length": 1, "past_sequence_length": context,
             "total_sequence_length": context + 1, "num_logits": 1}
    feed = {}
    for spec in read_export_manifest(out).components["decoder"].inputs:
        shape = tuple(sizes[d] if isinstance(d, str) else int(d) for d in spec.shape)
        if spec.dtype == "int64":
            feed[spec.name] = np.zeros(shape, np.int64) if spec.name == "logits_positions" else np.ones(shape, np.int64)
        else:
            feed[spec.name] = (rng.standard_normal(shape) * 0.5).astype(np.float32)
    return feed


def make_session(path: Path, threads: int):
    """The runners' session with ``autoglm-trt bench``'s settings (full optimisation, 1 inter-op thread)."""
    from trt_pipeline.runtime.onnxruntime_runner import OrtSettings, session

    return session(path, settings=OrtSettings(intra_op_threads=threads, inter_op_threads=1))


def interleaved_decode(out: Path, paths: dict[str, Path], contexts: list[int], threads: int, rounds: int,
                       steps: int) -> dict[str, dict[int, dict[str, float]]]:
    """Median step latency per variant and context, the variants taking turns every round."""
    sessions = {name: make_session(path, threads) for name, path in paths.items()}
    rng = np.random.default_rng(0)
    feeds = {c: decode_feed(out, c, rng) for c in contexts}
    samples: dict[str, dict[int, list[float]]] = {n: {c: [] for c in contexts} for n in sessions}
    for name, sess in sessions.items():  # warm-up
        for c in contexts:
            for _ in range(3):
                sess.run(["logits"], feeds[c])
    for _ in range(rounds):
        for c in contexts:
            for name, sess in sessions.items():
                times = []
                for _ in range(steps):
                    start = time.perf_counter()
                    sess.run(["logits"], feeds[c])
                    times.append((time.perf_counter() - start) * 1e3)
                samples[name][c].append(statistics.median(times))
    return {n: {c: {"p50_ms": round(statistics.median(v), 3), "min_round_ms": round(min(v), 3),
                    "rounds_ms": [round(x, 3) for x in v]} for c, v in per.items()} for n, per in samples.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=ROOT / "engines" / "bench-small")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--method", default="awq")
    args = parser.parse_args()

    from trt_pipeline.bench.roofline import onnx_weight_bytes
    from trt_pipeline.quantize.int4 import ort_fused_matmuls

    load_before = os.getloadavg()
    out = ensure_export(args.work)
    paths = ensure_int4(out, args.work, args.method)
    manifest = json.loads((out / "onnx" / "int4" / "manifest.json").read_text())
    quantized = len(manifest["components"]["decoder"]["nodes_quantized"])
    fusion = {name: {**ort_fused_matmuls(p), "int4_matmuls": quantized} for name, p in paths.items() if name != "fp32"}
    contexts = [64, 512]
    decode = interleaved_decode(out, paths, contexts, args.threads, args.rounds, args.steps)
    speedup = {name: {c: round(decode["fp32"][c]["p50_ms"] / decode[name][c]["p50_ms"], 3) for c in contexts}
               for name in paths if name != "fp32"}
    record = {
        "command": f"python benchmarks/int4_small.py --threads {args.threads} --rounds {args.rounds} "
                   f"--steps {args.steps} --method {args.method}",
        "preset": "small", "threads": args.threads, "rounds": args.rounds, "steps_per_round": args.steps,
        "int4": manifest["components"]["decoder"]["int4"] | {"nodes_quantized": quantized},
        "decoder_weight_bytes": {name: onnx_weight_bytes(p) for name, p in paths.items()},
        "ort_fusion": fusion,
        "decode_ms": decode,
        "speedup_over_fp32": speedup,
        "load_average": {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in os.getloadavg()]},
        "note": "shared 2-core machine (8 sessions): absolute times are noisy; variants interleaved per round, "
                "ratios from the same run",
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "int4_small.json").write_text(json.dumps(record, indent=2) + "\n")
    for name, per in speedup.items():
        print(f"{name}: MatMulNBits {fusion[name]['MatMulNBits']}/{quantized}; decode " + ", ".join(
            f"@{c}: {decode[name][c]['p50_ms']:.2f} ms vs fp32 {decode['fp32'][c]['p50_ms']:.2f} ms ({r:.2f}x)"
            for c, r in per.items()))
    print(f"wrote {RESULTS / 'int4_small.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
