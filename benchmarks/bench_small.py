"""Benchmark the ``small`` preset (~110 M parameters): transformers eager vs our exports on ONNX Runtime.

Steps (each reused when its output already exists, unless ``--fresh``):

1. ``init-checkpoint --preset small`` -> ``engines/bench-small/checkpoint`` (fp32, seed 0), then its
   RMSNorm weights set to ``1 + N(0, 0.1)`` (seed 0) as a trained checkpoint's are: a random
   checkpoint's norms are all ones, the exporter drops a multiplication by ones, and ONNX Runtime's
   SimplifiedLayerNormalization fusion then has no scale to match, so the graph would not be the
   one a real checkpoint gives;
2. ``export`` with ``--max-seq 320 --max-kv 512 --no-validate --decoder-ops fused`` ->
   ``engines/bench-small/export`` (320: room for the longest calibration prompt, 268 tokens, which the
   fp16/int8 stages need; ``--decoder-ops portable`` benches the graph every TensorRT parses);
3. fp16 / int8 ONNX variants when the precision stage is installed (``--no-precision`` skips them);
4. ``bench``: torch (transformers eager ``Glm4vForConditionalGeneration`` with its own KV cache),
   torch-export (our modules), ort-fp32 / ort-fp16 / ort-int8; prefill at 16/64/256 prompt tokens,
   decode at 64/256/512 cached tokens; threads pinned to the same count for torch and ONNX Runtime
   (default: every core); each backend in its own process (peak RSS per backend).

Writes ``benchmarks/results/bench_small.json`` (the full bench.json plus a ``headline`` block: ORT
fp32 / transformers decode speed-up and roofline fractions per context; the decoder's node counts as
exported and after ONNX Runtime's optimizer; the machine load during the run) and ``bench_small.png``.
The export is redone when its ``decoder_graph`` record differs from the current graph's.

    python benchmarks/bench_small.py [--threads 2] [--fresh] [--no-precision] [--decoder-ops portable]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def headline(report: dict) -> dict:
    """ORT fp32 vs transformers decode speed-up and roofline fractions per context."""
    speedups = {s["context"]: s["speedup"] for s in report["speedups"]
                if s["backend"] == "ort-fp32" and s["phase"] == "decode"}
    prefill = {s["length"]: s["speedup"] for s in report["speedups"]
               if s["backend"] == "ort-fp32" and s["phase"] == "prefill"}
    roofline: dict[str, dict] = {}
    for point in report["roofline"]:
        roofline.setdefault(point["backend"], {})[point["context"]] = {
            "measured_ms": point["measured_ms"], "lower_bound_ms": point["lower_bound_ms"], "fraction": point["fraction"]}
    decode = {name: {row["context"]: row["p50_ms"] for row in entry["decode"]}
              for name, entry in report["backends"].items() if entry.get("status") == "ok"}
    prefill_ms = {name: {row["length"]: row["p50_ms"] for row in entry["prefill"]}
                  for name, entry in report["backends"].items() if entry.get("status") == "ok"}
    return {
        "bandwidth_gbps": report["config"].get("roofline_bandwidth_gbps", report["bandwidth"]["best_gbps"]),
        "clock": report["config"].get("clock", "wall"),
        "threads": report["config"]["threads"],
        "onnxruntime": report["config"].get("onnxruntime"),
        "decode_p50_ms": decode,
        "prefill_p50_ms": prefill_ms,
        "ort_fp32_over_torch_decode_speedup": speedups,
        "ort_fp32_over_torch_prefill_speedup": prefill,
        "ort_fp32_faster_than_torch_decode_at_every_context": bool(speedups) and all(v > 1 for v in speedups.values()),
        "roofline": roofline,
    }


def stale_export(out: Path, export_cfg: object) -> bool:
    """An export made with other ranges, or with a decoder graph other than the current code's of its flavour."""
    from trt_pipeline.models.glm4v.decoder_ops import decoder_graph

    if not (out / "export.json").is_file():
        return False
    manifest = json.loads((out / "export.json").read_text())
    previous = manifest.get("config") or {}
    ranges = (previous.get("max_seq"), previous.get("max_kv")) != (export_cfg.max_seq, export_cfg.max_kv)
    return ranges or manifest.get("decoder_graph") != decoder_graph(export_cfg.decoder_ops, export_cfg.kv_cache)


def prepare(work: Path, fresh: bool, precision: bool, decoder_ops: str,
            kv_cache: str = "concat") -> tuple[Path, object, list[str], dict]:
    """Checkpoint (trained-like norms), export and precision variants; returns (out, export cfg, backends, timings)."""
    from trt_pipeline.config import ExportConfig
    from trt_pipeline.export.exporter import export
    from trt_pipeline.fixtures.checkpoint_factory import write_checkpoint
    from trt_pipeline.fixtures.norms import trained_like_norms

    checkpoint, out = work / "checkpoint", work / "export"
    if fresh and work.exists():
        shutil.rmtree(work)
    timings: dict[str, float] = {}
    if not (checkpoint / "config.json").is_file():
        start = time.perf_counter()
        write_checkpoint(checkpoint, preset="small", seed=0, overwrite=True)
        timings["init_checkpoint_s"] = round(time.perf_counter() - start, 1)
    if trained_like_norms(checkpoint) and out.exists():
        shutil.rmtree(out)  # exported from the all-ones norms
    # max_seq 320: the longest calibration/held-out prompt of the small preset's tokenizer is 268 tokens,
    # and the fp16/int8 stages refuse items outside the exported ranges
    export_cfg = ExportConfig(max_seq=320, max_kv=512, validate=False, decoder_ops=decoder_ops, kv_cache=kv_cache)
    if stale_export(out, export_cfg):
        shutil.rmtree(out)
    if not (out / "export.json").is_file():
        start = time.perf_counter()
        export(checkpoint, out, export_cfg)
        timings["export_s"] = round(time.perf_counter() - start, 1)
    backends = ["torch", "torch-export", "ort-fp32"]
    if precision:
        backends += precision_variants(out, timings)
    return out, export_cfg, backends, timings


def precision_variants(out: Path, timings: dict) -> list[str]:
    """Make the fp16 / int8 variants when the precision stage is installed; their backend names."""
    try:
        from trt_pipeline.config import Fp16Config, Int8Config
        from trt_pipeline.quantize.precision import make_fp16, make_int8
    except ImportError as error:
        print(f"skipped: fp16/int8 variants (precision stage not available: {error})", file=sys.stderr)
        return []
    names = []
    for name, make, cfg in (("fp16", make_fp16, Fp16Config()), ("int8", make_int8, Int8Config())):
        if not (out / "onnx" / name / "manifest.json").is_file():
            start = time.perf_counter()
            try:
                make(out, cfg)
            except Exception as error:  # an accuracy gate on random weights must not stop the benchmark
                print(f"note: {name} variant: {error}", file=sys.stderr)
            timings[f"{name}_s"] = round(time.perf_counter() - start, 1)
        if (out / "onnx" / name / "decoder.onnx").is_file():
            names.append(f"ort-{name}")
    return names


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=ROOT / "engines" / "bench-small")
    parser.add_argument("--threads", type=int, default=None, help="same intra-op threads for torch and ORT (default: all cores)")
    parser.add_argument("--fresh", action="store_true", help="re-create the checkpoint and the export")
    parser.add_argument("--no-precision", action="store_true", help="do not make/bench the fp16 and int8 variants")
    parser.add_argument("--no-io-binding", action="store_true", help="ONNX Runtime without IO binding (plain run)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="cpu: CPU time of the one measuring thread (needs --threads 1), against one thread's "
                             "bandwidth; stays comparable when other processes load the machine")
    parser.add_argument("--decoder-ops", choices=("fused", "portable"), default="fused",
                        help="the export's decoder flavour (`export --decoder-ops`): fused is the ONNX Runtime one")
    parser.add_argument("--kv-cache", choices=("concat", "inplace"), default="concat",
                        help="the KV-cache contract with fused ops (`export --kv-cache`; portable is always concat)")
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--decode-steps", type=int, default=32)
    args = parser.parse_args()

    from trt_pipeline.bench.graph_stats import graph_stats
    from trt_pipeline.bench.run import bench
    from trt_pipeline.config import BenchConfig

    kv_cache = args.kv_cache if args.decoder_ops == "fused" else "concat"
    out, export_cfg, backends, timings = prepare(args.work, args.fresh, not args.no_precision, args.decoder_ops, kv_cache)
    cfg = BenchConfig(backends=tuple(backends), prompt_lengths=(16, 64, 256), context_lengths=(64, 256, 512),
                      iterations=args.iterations, decode_steps=args.decode_steps, warmup=3, threads=args.threads,
                      isolate=True, bandwidth_mib=512, bandwidth_repeats=5, io_binding=not args.no_io_binding,
                      clock=args.clock)
    load_before = os.getloadavg()
    report = bench(out, cfg).to_dict()
    record = {
        "command": "python " + " ".join(["benchmarks/bench_small.py", *sys.argv[1:]]),
        "preset": "small",
        "checkpoint_norms": "RMSNorm weights 1 + N(0, 0.1), seed 0 (as a trained checkpoint; see module docstring)",
        "export_config": export_cfg.to_dict(),
        "setup_timings": timings,
        "machine_load": {"loadavg_before": [round(v, 2) for v in load_before],
                         "loadavg_after": [round(v, 2) for v in os.getloadavg()], "cpus": os.cpu_count()},
        "headline": headline(report),
        "decoder_graph": {**json.loads((out / "export.json").read_text()).get("decoder_graph", {}),
                          **graph_stats(out / "onnx" / "fp32" / "decoder.onnx")},
        **report,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bench_small.json").write_text(json.dumps(record, indent=2) + "\n")
    shutil.copyfile(out / "reports" / "bench.png", RESULTS / "bench_small.png")
    print_headline(record)
    return 0


def print_headline(record: dict) -> None:
    head = record["headline"]
    print(f"bandwidth {head['bandwidth_gbps']} GB/s, {head['threads']} threads, load {record['machine_load']}")
    for context, ratio in head["ort_fp32_over_torch_decode_speedup"].items():
        fraction = head["roofline"].get("ort-fp32", {}).get(context, {}).get("fraction")
        print(f"decode @{context}: torch {head['decode_p50_ms']['torch'][context]:.2f} ms, ort-fp32 "
              f"{head['decode_p50_ms']['ort-fp32'][context]:.2f} ms -> {ratio:.2f}x; ort-fp32 roofline fraction {fraction:.1%}")
    print(f"wrote {RESULTS / 'bench_small.json'} and {RESULTS / 'bench_small.png'}")


if __name__ == "__main__":
    sys.exit(main())
