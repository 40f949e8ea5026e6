#!/usr/bin/env python3
"""INT8 on a (trained) checkpoint: plain, + smoothing, --target-token-agreement; calibrate-once timing.

Runs the command line end to end on one export and records, per variant, the held-out figures:
teacher-forced token agreement (the candidate predicts each next token given the fp32 ONNX's greedy
prefix), exact greedy sequences (exact-match rate, token agreement) and logits metrics, with
``--max-new-tokens`` (32) new tokens per held-out prompt (text and image prompts)::

    autoglm-trt export CHECKPOINT --out WORK/export --max-seq S --max-kv K --no-validate
    autoglm-trt precision int8 WORK/export --max-new-tokens 32                          # plain
    autoglm-trt precision int8 WORK/export --max-new-tokens 32 --smooth                 # + smoothing
    autoglm-trt precision int8 WORK/export --max-new-tokens 32 --target-token-agreement T   # per --targets

Calibration time: ``precision int8 --no-evaluate`` (quantization only) with the code of
``--before-commit`` (ModelOpt re-calibrated over every feed after our own pass) and with this tree
(one pass; ModelOpt gets one feed), interleaved ``--repeats`` times; the machine is shared, so the
JSON keeps each run, the ratio of medians and ``uptime`` before and after.

Usage::

    .venv/bin/python benchmarks/int8_search.py --checkpoint CKPT --out benchmarks/results/int8_search_trained.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def run(args: list[str], log: list[dict[str, Any]], pythonpath: Path = REPO, ok: tuple[int, ...] = (0, 5)) -> float:
    """``autoglm-trt ARGS`` with ``pythonpath`` first on the path; records command, exit code, seconds.

    A failure (exit 5: a gate, or an unreachable target) stays in the log with its stderr tail.
    """
    exe = Path(sys.executable).with_name("autoglm-trt")
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    start = time.perf_counter()
    proc = subprocess.run([str(exe), *args], capture_output=True, text=True, env=env)
    seconds = round(time.perf_counter() - start, 2)
    entry: dict[str, Any] = {"command": "autoglm-trt " + " ".join(args), "code": str(pythonpath),
                             "exit_code": proc.returncode, "seconds": seconds}
    if proc.returncode:
        entry["stderr_tail"] = proc.stderr.strip().splitlines()[-4:]
    log.append(entry)
    print(f"[{seconds:7.1f} s] exit {proc.returncode}: {entry['command']}", flush=True)
    if proc.returncode not in ok:
        print(proc.stderr[-4000:], file=sys.stderr)
        raise SystemExit(f"command failed: {entry['command']}")
    return seconds


def teacher_forced(export: Path, folder: Path, heldout: int, tokens: int) -> dict[str, Any]:
    """Teacher-forced agreement of the variant in ``folder`` (library call, same scorer as the search)."""
    sys.path.insert(0, str(REPO))
    from trt_pipeline.quantize.calibration_reader import CalibrationReader
    from trt_pipeline.quantize.dataset import load_split
    from trt_pipeline.quantize.int8_search import HeldoutReference
    from trt_pipeline.quantize.precision import calibration_folders

    _, heldout_dir = calibration_folders(None)
    reference = HeldoutReference(export, CalibrationReader(export, load_split(heldout_dir), heldout), tokens)
    vision = folder / "vision_encoder.onnx"
    scored = reference.teacher_forced(vision if vision.is_file() else None, folder / "decoder.onnx")
    return {"teacher_forced_agreement": scored.agreement, "steps": scored.steps, "per_prompt": scored.per_prompt}


def figures(export: Path, heldout: int, tokens: int, chart: Path) -> dict[str, Any]:
    folder = export / "onnx" / "int8"
    accuracy = json.loads((folder / "accuracy.json").read_text())
    manifest = json.loads((folder / "manifest.json").read_text())
    decoder = manifest["components"]["decoder"]
    row: dict[str, Any] = {
        "passed": accuracy["passed"],
        "logits": {k: accuracy["metrics"]["logits"][k] for k in ("cosine_min", "p99_rel", "top1_agreement")},
        "tokens": {k: v for k, v in accuracy["tokens"].items() if k != "per_prompt"},
        **teacher_forced(export, folder, heldout, tokens),
        "decoder_nodes_quantized": len(decoder["nodes_quantized"]),
        "int8_seconds": decoder["int8"]["seconds"],
        "stage_seconds": manifest["seconds"],
    }
    if "smoothing" in decoder:
        row["smoothing"] = {k: v for k, v in decoder["smoothing"].items() if k != "tensors"}
    if "search" in manifest:
        search = manifest["search"]
        row["search"] = {k: search[k] for k in ("kept_high_precision", "kept_fraction", "tried", "order",
                                                 "sensitivity", "teacher_forced_agreement",
                                                 "sensitivity_seconds", "search_seconds")}
        row["search"]["groups"] = len(search["order"])
        shutil.copy2(folder / search["chart"], chart)
    return row


def old_tree(commit: str, into: Path) -> Path:
    """``trt_pipeline`` of ``commit`` extracted into ``into`` (for the before timing)."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", commit, "trt_pipeline", "calibration"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def timing(export: Path, before: Path, repeats: int, calib: int, log: list[dict[str, Any]]) -> dict[str, Any]:
    """Interleaved quantization-only runs (before / after calibrate-once)."""
    base = ["precision", "int8", str(export), "--no-evaluate", "--calib-samples", str(calib)]
    runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    load = [uptime()]
    for _ in range(repeats):
        for name, code in (("before", before), ("after", REPO)):
            wall = run(base, log, code, ok=(0,))
            manifest = json.loads((export / "onnx" / "int8" / "manifest.json").read_text())
            runs[name].append({"wall_seconds": wall, "stage_seconds": manifest["seconds"],
                               **{f"{c}_int8_seconds": e["int8"]["seconds"] for c, e in manifest["components"].items()}})
    load.append(uptime())
    median = {n: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for n, rs in runs.items()}
    ratio = {k: round(median["after"][k] / median["before"][k], 3) for k in median["after"]}
    return {"runs": runs, "median": median, "after_over_before": ratio, "uptime": load}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("/tmp/int8_search"))
    parser.add_argument("--out", type=Path, default=HERE / "results" / "int8_search.json")
    parser.add_argument("--max-seq", type=int, default=384)
    parser.add_argument("--max-kv", type=int, default=512)
    parser.add_argument("--calib-samples", type=int, default=16)
    parser.add_argument("--heldout-samples", type=int, default=28, help="28 = every held-out prompt (26 image, 2 text)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--targets", default="0.9,0.99", help="--target-token-agreement values, one run each")
    parser.add_argument("--targets-vision-fp16", default="0.99", help="the same with --vision-precision fp16")
    parser.add_argument("--before-commit", default="8b8edf2")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    export, log = args.work / "export", []
    args.work.mkdir(parents=True, exist_ok=True)
    if not (export / "export.json").is_file():
        run(["export", str(args.checkpoint), "--out", str(export), "--max-seq", str(args.max_seq),
             "--max-kv", str(args.max_kv), "--no-validate"], log)
    common = ["precision", "int8", str(export), "--calib-samples", str(args.calib_samples), "--heldout-samples",
              str(args.heldout_samples), "--max-new-tokens", str(args.max_new_tokens)]
    variants = {}
    runs = [("int8", []), ("int8+smooth", ["--smooth"])]
    runs += [(f"int8 target {t}", ["--target-token-agreement", t]) for t in args.targets.split(",") if t]
    runs += [(f"int8 target {t}, vision fp16", ["--target-token-agreement", t, "--vision-precision", "fp16"])
             for t in args.targets_vision_fp16.split(",") if t]
    for name, extra in runs:
        shutil.rmtree(export / "onnx" / "int8", ignore_errors=True)  # a failed run must not read an older folder
        run(common + extra, log)
        if not (export / "onnx" / "int8" / "manifest.json").is_file():
            variants[name] = {"exit_code": log[-1]["exit_code"], "error": log[-1].get("stderr_tail")}
            continue
        chart = args.out.with_name(f"{args.out.stem}.{name.replace(' ', '_').replace(',', '')}.png")
        variants[name] = figures(export, args.heldout_samples, args.max_new_tokens, chart)
    with tempfile.TemporaryDirectory(prefix="int8-before.") as scratch:
        calibrate_once = timing(export, old_tree(args.before_commit, Path(scratch)), args.repeats,
                                args.calib_samples, log)
    result = {
        "benchmark": "int8_search",
        "checkpoint": str(args.checkpoint),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
        "note": "machine shared by several sessions: timings are noisy, compare the interleaved ratio",
        "max_new_tokens": args.max_new_tokens,
        "variants": variants,
        "calibrate_once": {"before_commit": args.before_commit, **calibrate_once},
        "commands": log,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
