"""Benchmark the ``small`` preset (~110 M parameters): transformers eager vs our exports on ONNX Runtime.

Steps (each reused when its output already exists, unless ``--fresh``):

1. ``init-checkpoint --preset small`` -> ``engines/bench-small/checkpoint`` (fp32, seed 0);
2. ``export`` with ``--max-seq 320 --max-kv 512 --no-validate`` -> ``engines/bench-small/export``
   (320: room for the longest calibration prompt, 268 tokens, which the fp16/int8 stages need);
3. fp16 / int8 ONNX variants when the precision stage is installed (``--no-precision`` skips them);
4. ``bench``: torch (transformers eager ``Glm4vForConditionalGeneration`` with its own KV cache),
   torch-export (our modules), ort-fp32 / ort-fp16 / ort-int8; prefill at 16/64/256 prompt tokens,
   decode at 64/256/512 cached tokens; threads pinned to the same count for torch and ONNX Runtime
   (default: every core); each backend in its own process (peak RSS per backend).

Writes ``benchmarks/results/bench_small.json`` (the full bench.json plus a ``headline`` block: ORT
fp32 / transformers decode speed-up and roofline fractions per context) and ``bench_small.png``.

    python benchmarks/bench_small.py [--threads 2] [--fresh] [--no-precision]
"""

from __future__ import annotations

import argparse
import json
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
    return {
        "bandwidth_gbps": report["bandwidth"]["best_gbps"],
        "threads": report["config"]["threads"],
        "decode_p50_ms": decode,
        "ort_fp32_over_torch_decode_speedup": speedups,
        "ort_fp32_over_torch_prefill_speedup": prefill,
        "ort_fp32_faster_than_torch_decode_at_every_context": bool(speedups) and all(v > 1 for v in speedups.values()),
        "roofline": roofline,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=ROOT / "engines" / "bench-small")
    parser.add_argument("--threads", type=int, default=None, help="same intra-op threads for torch and ORT (default: all cores)")
    parser.add_argument("--fresh", action="store_true", help="re-create the checkpoint and the export")
    parser.add_argument("--no-precision", action="store_true", help="do not make/bench the fp16 and int8 variants")
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--decode-steps", type=int, default=32)
    args = parser.parse_args()

    from trt_pipeline.bench.run import bench
    from trt_pipeline.config import BenchConfig, ExportConfig
    from trt_pipeline.export.exporter import export
    from trt_pipeline.fixtures.checkpoint_factory import write_checkpoint

    checkpoint, out = args.work / "checkpoint", args.work / "export"
    if args.fresh and args.work.exists():
        shutil.rmtree(args.work)
    timings = {}
    if not (checkpoint / "config.json").is_file():
        start = time.perf_counter()
        write_checkpoint(checkpoint, preset="small", seed=0, overwrite=True)
        timings["init_checkpoint_s"] = round(time.perf_counter() - start, 1)
    # max_seq 320: the longest calibration/held-out prompt of the small preset's tokenizer is 268 tokens,
    # and the fp16/int8 stages refuse items outside the exported ranges
    export_cfg = ExportConfig(max_seq=320, max_kv=512, validate=False)
    previous = json.loads((out / "export.json").read_text()).get("config") if (out / "export.json").is_file() else None
    if previous and (previous.get("max_seq"), previous.get("max_kv")) != (export_cfg.max_seq, export_cfg.max_kv):
        shutil.rmtree(out)
    if not (out / "export.json").is_file():
        start = time.perf_counter()
        export(checkpoint, out, export_cfg)
        timings["export_s"] = round(time.perf_counter() - start, 1)
    backends = ["torch", "torch-export", "ort-fp32"]
    if not args.no_precision:
        try:
            from trt_pipeline.config import Fp16Config, Int8Config
            from trt_pipeline.quantize.precision import make_fp16, make_int8
        except ImportError as error:
            print(f"skipped: fp16/int8 variants (precision stage not available: {error})", file=sys.stderr)
        else:
            for name, make, cfg in (("fp16", make_fp16, Fp16Config()), ("int8", make_int8, Int8Config())):
                if not (out / "onnx" / name / "manifest.json").is_file():
                    start = time.perf_counter()
                    try:
                        make(out, cfg)
                    except Exception as error:  # an accuracy gate on random weights must not stop the benchmark
                        print(f"note: {name} variant: {error}", file=sys.stderr)
                    timings[f"{name}_s"] = round(time.perf_counter() - start, 1)
                if (out / "onnx" / name / "decoder.onnx").is_file():
                    backends.append(f"ort-{name}")
    cfg = BenchConfig(backends=tuple(backends), prompt_lengths=(16, 64, 256), context_lengths=(64, 256, 512),
                      iterations=args.iterations, decode_steps=args.decode_steps, warmup=3, threads=args.threads,
                      isolate=True, bandwidth_mib=512, bandwidth_repeats=5)
    report = bench(out, cfg).to_dict()
    record = {
        "command": "python benchmarks/bench_small.py" + (f" --threads {args.threads}" if args.threads else ""),
        "preset": "small",
        "export_config": export_cfg.to_dict(),
        "setup_timings": timings,
        "headline": headline(report),
        **report,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bench_small.json").write_text(json.dumps(record, indent=2) + "\n")
    shutil.copyfile(out / "reports" / "bench.png", RESULTS / "bench_small.png")
    head = record["headline"]
    print(f"bandwidth {head['bandwidth_gbps']} GB/s, {head['threads']} threads")
    for context, ratio in head["ort_fp32_over_torch_decode_speedup"].items():
        fraction = head["roofline"].get("ort-fp32", {}).get(context, {}).get("fraction")
        print(f"decode @{context}: torch {head['decode_p50_ms']['torch'][context]:.2f} ms, ort-fp32 "
              f"{head['decode_p50_ms']['ort-fp32'][context]:.2f} ms -> {ratio:.2f}x; ort-fp32 roofline fraction {fraction:.1%}")
    print(f"wrote {RESULTS / 'bench_small.json'} and {RESULTS / 'bench_small.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
