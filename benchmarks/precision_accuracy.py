#!/usr/bin/env python3
"""Held-out accuracy of the FP16 (AutoCast) and INT8 (Q/DQ) ONNX variants of a preset, on a CPU.

Runs the command line end to end and records the exact commands, their exit codes and timings,
plus each variant's ``accuracy.json`` figures (reference: the fp32 ONNX on ONNX Runtime)::

    autoglm-trt init-checkpoint --preset small --out WORK/checkpoint
    autoglm-trt export WORK/checkpoint --out WORK/export --max-seq 384 --max-kv 512 --no-validate
    autoglm-trt precision fp16 WORK/export --calib-samples 8 --heldout-samples 8
    autoglm-trt precision int8 WORK/export --method METHOD --calib-samples 16 --heldout-samples 8   # per method

A variant failing its gate (exit code 5) is recorded with its figures, not treated as a crash.
The last ``--methods`` entry is the one left in ``WORK/export/onnx/int8``.

Usage::

    .venv/bin/python benchmarks/precision_accuracy.py                      # small preset -> benchmarks/precision_small.json
    .venv/bin/python benchmarks/precision_accuracy.py --preset tiny --max-seq 96 --max-kv 128 --out /tmp/precision_tiny.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
KEEP = ("cosine_min", "cosine_mean", "max_abs", "p99_rel", "p99_rel_mean", "top1_agreement", "feeds")


def run(cmd: list[str], log: list[dict[str, Any]]) -> int:
    """Run ``autoglm-trt ...`` from this interpreter's environment; record command, exit code, time."""
    exe = Path(sys.executable).with_name("autoglm-trt")
    start = time.perf_counter()
    proc = subprocess.run([str(exe), *cmd[1:]], capture_output=True, text=True)
    seconds = round(time.perf_counter() - start, 1)
    entry: dict[str, Any] = {"command": " ".join(cmd), "exit_code": proc.returncode, "seconds": seconds}
    if proc.returncode:
        entry["stderr_tail"] = proc.stderr.strip().splitlines()[-6:]
    log.append(entry)
    print(f"[{seconds:7.1f} s] exit {proc.returncode}: {' '.join(cmd)}", flush=True)
    if proc.returncode not in (0, 5):
        print(proc.stderr[-4000:], file=sys.stderr)
        raise SystemExit(f"command failed: {' '.join(cmd)}")
    return proc.returncode


def variant_figures(folder: Path) -> dict[str, Any]:
    accuracy = json.loads((folder / "accuracy.json").read_text())
    manifest = json.loads((folder / "manifest.json").read_text())
    components = {}
    for name, entry in manifest["components"].items():
        info: dict[str, Any] = {"precision": entry["precision"], "bytes": (folder / entry["file"]).stat().st_size}
        if "nodes_kept_fp32" in entry:
            info["nodes_kept_fp32"] = len(entry["nodes_kept_fp32"])
            info["kept_fp32_by_op_type"] = entry.get("autocast", {}).get("kept_fp32_by_op_type")
            info["seconds"] = entry.get("autocast", {}).get("seconds")
        if "nodes_quantized" in entry:
            info["nodes_quantized"] = len(entry["nodes_quantized"])
            info["nodes_excluded"] = entry["nodes_excluded"]
            info["qdq_counts"] = entry["qdq_counts"]
            info["seconds"] = entry["int8"]["seconds"]
        components[name] = info
    return {
        "passed": accuracy["passed"],
        "gates": accuracy["gates"],
        "metrics": {k: {m: v[m] for m in KEEP if m in v} for k, v in accuracy["metrics"].items() if v},
        "tokens": {k: v for k, v in (accuracy.get("tokens") or {}).items() if k != "per_prompt"},
        "heldout_items": accuracy["heldout"]["num_items"],
        "calibration_items": manifest["calibration"]["num_items"],
        "method": manifest.get("method"),
        "components": components,
        "stage_seconds": manifest.get("seconds"),
        "evaluation_seconds": accuracy["seconds"],
        "relative_error": accuracy["relative_error"],
        "reference": accuracy["reference"],
    }


def summary_row(fig: dict[str, Any]) -> dict[str, Any]:
    m, t = fig["metrics"], fig["tokens"]
    return {
        "passed": fig["passed"],
        "logits_cosine_min": m.get("logits", {}).get("cosine_min"),
        "logits_p99_rel": m.get("logits", {}).get("p99_rel"),
        "logits_top1_agreement": m.get("logits", {}).get("top1_agreement"),
        "vision_cosine_min": m.get("image_features", {}).get("cosine_min"),
        "vision_p99_rel": m.get("image_features", {}).get("p99_rel"),
        "token_agreement": t.get("token_agreement"),
        "token_exact_match": t.get("exact_match_rate"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default /tmp/precision_PRESET)")
    parser.add_argument("--out", type=Path, default=None, help="result JSON (default benchmarks/precision_PRESET.json)")
    parser.add_argument("--max-seq", type=int, default=384)
    parser.add_argument("--max-kv", type=int, default=512)
    parser.add_argument("--methods", default="entropy,max,percentile")
    parser.add_argument("--fp16-calib-samples", type=int, default=8)
    parser.add_argument("--int8-calib-samples", type=int, default=16)
    parser.add_argument("--heldout-samples", type=int, default=8)
    parser.add_argument("--reuse", action="store_true", help="keep an existing WORK/checkpoint and WORK/export")
    args = parser.parse_args()
    work = args.work or Path(f"/tmp/precision_{args.preset}")
    out = args.out or HERE / f"precision_{args.preset}.json"
    ckpt, export = work / "checkpoint", work / "export"
    log: list[dict[str, Any]] = []
    if not args.reuse and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    if not (ckpt / "config.json").is_file():
        run(["autoglm-trt", "init-checkpoint", "--preset", args.preset, "--out", str(ckpt)], log)
    if not (export / "export.json").is_file():
        run(["autoglm-trt", "export", str(ckpt), "--out", str(export), "--max-seq", str(args.max_seq),
             "--max-kv", str(args.max_kv), "--no-validate"], log)
    variants: dict[str, Any] = {}
    run(["autoglm-trt", "precision", "fp16", str(export), "--calib-samples", str(args.fp16_calib_samples),
         "--heldout-samples", str(args.heldout_samples)], log)
    variants["fp16"] = variant_figures(export / "onnx" / "fp16")
    for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
        run(["autoglm-trt", "precision", "int8", str(export), "--method", method, "--calib-samples",
             str(args.int8_calib_samples), "--heldout-samples", str(args.heldout_samples)], log)
        variants[f"int8-{method}"] = variant_figures(export / "onnx" / "int8")
    export_manifest = json.loads((export / "export.json").read_text())
    result = {
        "benchmark": "precision_accuracy",
        "preset": args.preset,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
        "tool_versions": json.loads((export / "onnx" / "fp16" / "manifest.json").read_text())["tool_versions"],
        "export_dims": export_manifest["dims"],
        "gates": {"fp16": "logits cosine_min >= 0.9999 and logits p99_rel <= 1e-2",
                  "int8": "logits cosine_min >= 0.99 and image_features cosine_min >= 0.99"},
        "commands": log,
        "summary": {name: summary_row(fig) for name, fig in variants.items()},
        "variants": variants,
    }
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result["summary"], indent=2))
    print(f"written {out}")


if __name__ == "__main__":
    main()
