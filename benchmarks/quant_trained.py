#!/usr/bin/env python3
"""Quantization on the trained fixture (issue 15's acceptance table): INT8 plain / + smoothing / with a
token-agreement target, INT4 weight-only; and the calibrate-once timing.

Runs the command line end to end on one export and records, per variant, the held-out figures that
``precision``'s own evaluation writes to ``accuracy.json`` (all 28 held-out prompts, 26 with an image,
``--max-new-tokens`` 32 new tokens, vs the fp32 ONNX on ONNX Runtime): teacher-forced agreement (the
variant predicts each next token given the fp32 greedy prefix), exact greedy sequences, logits cosine;
for the search the fraction of decoder node groups kept in fp16; for INT4 the decoder's weight bytes
against the fp16 decoder's::

    autoglm-trt export CHECKPOINT --out WORK/export --max-seq S --max-kv K --no-validate
    autoglm-trt precision fp16 WORK/export --no-evaluate                                   # the bytes reference
    autoglm-trt precision int8 WORK/export --max-new-tokens 32                             # plain
    autoglm-trt precision int8 WORK/export --max-new-tokens 32 --smooth                    # + smoothing
    autoglm-trt precision int8 WORK/export --max-new-tokens 32 --target-token-agreement T  # per --targets
    autoglm-trt precision int4 WORK/export --max-new-tokens 32                             # defaults

A variant whose stage exits 5 (a failed gate or an unreachable target) is recorded with its error;
a gate failure still has its accuracy.json. The table goes to ``--out`` (JSON) and a bar chart beside it.

Calibration time: ``precision int8 --no-evaluate`` (quantization only) with the code of
``--before-commit`` (ModelOpt re-calibrated over every feed after our own pass) and with this tree
(one pass; ModelOpt gets one feed), interleaved ``--repeats`` times while holding ``/tmp/bench.lock``
(``flock``: no other speed benchmark runs meanwhile); the JSON keeps each run, the ratio of medians
and ``uptime`` before and after.

Usage::

    .venv/bin/python benchmarks/quant_trained.py --checkpoint CKPT --out benchmarks/results/quant_trained.json
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
BENCH_LOCK = "/tmp/bench.lock"


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


def figures(export: Path, precision: str, chart: Path) -> dict[str, Any]:
    """The variant's held-out figures from its accuracy.json and manifest (precision's own measurement)."""
    from trt_pipeline.bench.roofline import onnx_weight_bytes

    folder = export / "onnx" / precision
    accuracy = json.loads((folder / "accuracy.json").read_text())
    manifest = json.loads((folder / "manifest.json").read_text())
    decoder = manifest["components"]["decoder"]
    tokens = accuracy["tokens"]
    row: dict[str, Any] = {
        "passed": accuracy["passed"],
        "failed_gates": [g for g in accuracy["gates"] if not g["passed"]],
        "teacher_forced_agreement": tokens["teacher_forced_agreement"],
        "exact_match_rate": tokens["exact_match_rate"],
        "tokens": {k: v for k, v in tokens.items() if k != "per_prompt"},
        "logits": {k: accuracy["metrics"]["logits"][k] for k in ("cosine_min", "cosine_mean", "p99_rel", "top1_agreement")},
        "decoder_nodes_quantized": len(decoder["nodes_quantized"]),
        "decoder_weight_bytes": onnx_weight_bytes(folder / "decoder.onnx"),
        "stage_seconds": manifest["seconds"],
    }
    if precision == "int4":
        row["int4"] = {k: decoder["int4"][k] for k in ("method_used", "modelopt_method", "block_size",
                                                          "block_size_source", "weight_bytes", "nodes_excluded")}
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


def table_chart(variants: dict[str, dict[str, Any]], fp16_bytes: int, path: Path) -> Path:
    """Grouped bars per variant: teacher-forced agreement and exact sequences (and the 90 % target)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    names = [n for n, v in variants.items() if "teacher_forced_agreement" in v]
    forced = [variants[n]["teacher_forced_agreement"] for n in names]
    exact = [variants[n]["exact_match_rate"] for n in names]
    labels = []
    for name in names:
        row, extra = variants[name], ""
        if "search" in row:
            extra = f"\n{row['search']['kept_fraction']:.0%} groups fp16"
        if name.startswith("int4"):
            extra = f"\n{row['decoder_weight_bytes'] / fp16_bytes:.2f}x fp16 bytes"
        labels.append(name + extra)
    fig, ax = plt.subplots(figsize=(2.2 * len(names) + 1.5, 4.2))
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], forced, 0.4, label="teacher-forced agreement", color="tab:blue")
    ax.bar([x + 0.2 for x in xs], exact, 0.4, label="exact sequences", color="tab:orange")
    for x, (f, e) in enumerate(zip(forced, exact)):
        ax.text(x - 0.2, f + 0.01, f"{f:.1%}", ha="center", fontsize=8)
        ax.text(x + 0.2, e + 0.01, f"{e:.0%}", ha="center", fontsize=8)
    ax.axhline(0.9, color="gray", linestyle="--", linewidth=1, label="target 90 % (teacher-forced)")
    ax.set_xticks(list(xs), labels, fontsize=8)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("vs fp32 ONNX, 28 held-out prompts, 32 tokens", fontsize=8)
    ax.set_title("Quantization on the trained fixture (ONNX Runtime CPU)", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def old_tree(commit: str, into: Path) -> Path:
    """``trt_pipeline`` of ``commit`` extracted into ``into`` (for the before timing)."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", commit, "trt_pipeline", "calibration"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def timing(export: Path, before: Path, repeats: int, calib: int, log: list[dict[str, Any]]) -> dict[str, Any]:
    """Interleaved quantization-only runs (before / after calibrate-once), holding /tmp/bench.lock."""
    import fcntl

    base = ["precision", "int8", str(export), "--no-evaluate", "--calib-samples", str(calib)]
    runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    with open(BENCH_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the same lock as `flock /tmp/bench.lock CMD`
        load = [uptime()]
        for _ in range(repeats):
            for name, code in (("before", before), ("after", REPO)):
                wall = run(base, log, code, ok=(0,))
                manifest = json.loads((export / "onnx" / "int8" / "manifest.json").read_text())
                runs[name].append({"wall_seconds": wall, "stage_seconds": manifest["seconds"],
                                   **{f"{c}_int8_seconds": e["int8"]["seconds"]
                                      for c, e in manifest["components"].items()}})
        load.append(uptime())
    median = {n: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for n, rs in runs.items()}
    ratio = {k: round(median["after"][k] / median["before"][k], 3) for k in median["after"]}
    return {"runs": runs, "median": median, "after_over_before": ratio, "uptime": load}


def variant_runs(args: argparse.Namespace) -> list[tuple[str, str, list[str]]]:
    """(name, precision, extra flags) of every variant of the table."""
    runs = [("int8", "int8", []), ("int8 + smoothing", "int8", ["--smooth"])]
    runs += [(f"int8 target {t}", "int8", ["--target-token-agreement", t]) for t in args.targets.split(",") if t]
    runs += [(f"int8 target {t}, vision fp16", "int8", ["--target-token-agreement", t, "--vision-precision", "fp16"])
             for t in args.targets_vision_fp16.split(",") if t]
    runs += [("int4 (defaults)", "int4", [])]
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("/tmp/quant_trained"))
    parser.add_argument("--out", type=Path, default=HERE / "results" / "quant_trained.json")
    parser.add_argument("--max-seq", type=int, default=384)
    parser.add_argument("--max-kv", type=int, default=512)
    parser.add_argument("--calib-samples", type=int, default=16)
    parser.add_argument("--heldout-samples", type=int, default=28, help="28 = every held-out prompt (26 image, 2 text)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--targets", default="0.9", help="--target-token-agreement values, one run each")
    parser.add_argument("--targets-vision-fp16", default="", help="the same with --vision-precision fp16")
    parser.add_argument("--before-commit", default="8b8edf2")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-timing", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from trt_pipeline.bench.roofline import onnx_weight_bytes

    export, log = args.work / "export", []
    args.work.mkdir(parents=True, exist_ok=True)
    if not (export / "export.json").is_file():
        run(["export", str(args.checkpoint), "--out", str(export), "--max-seq", str(args.max_seq),
             "--max-kv", str(args.max_kv), "--no-validate"], log)
    run(["precision", "fp16", str(export), "--no-evaluate"], log, ok=(0,))
    fp16_bytes = onnx_weight_bytes(export / "onnx" / "fp16" / "decoder.onnx")
    variants = {}
    for name, precision, extra in variant_runs(args):
        shutil.rmtree(export / "onnx" / precision, ignore_errors=True)  # a failed run must not read an older folder
        run(["precision", precision, str(export), "--calib-samples", str(args.calib_samples), "--heldout-samples",
             str(args.heldout_samples), "--max-new-tokens", str(args.max_new_tokens), *extra], log)
        if not (export / "onnx" / precision / "accuracy.json").is_file():
            variants[name] = {"exit_code": log[-1]["exit_code"], "error": log[-1].get("stderr_tail")}
            continue
        chart = args.out.with_name(f"{args.out.stem}.{name.replace(' ', '_').replace(',', '')}.png")
        variants[name] = {"exit_code": log[-1]["exit_code"], **figures(export, precision, chart)}
        if precision == "int4":
            variants[name]["decoder_bytes_vs_fp16"] = round(variants[name]["decoder_weight_bytes"] / fp16_bytes, 4)
    chart = table_chart(variants, fp16_bytes, args.out.with_suffix(".png"))
    result = {
        "benchmark": "quant_trained",
        "checkpoint": str(args.checkpoint),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
        "note": "machine shared by several sessions: timings are noisy, compare the interleaved ratio",
        "max_new_tokens": args.max_new_tokens,
        "heldout_samples": args.heldout_samples,
        "fp16_decoder_weight_bytes": fp16_bytes,
        "variants": variants,
        "chart": chart.name,
        "calibrate_once": None,
        "commands": log,
    }
    write(args.out, result)  # the table survives a failure of the timing below
    if not args.no_timing:
        with tempfile.TemporaryDirectory(prefix="int8-before.") as scratch:
            result["calibrate_once"] = {"before_commit": args.before_commit,
                                        **timing(export, old_tree(args.before_commit, Path(scratch)), args.repeats,
                                                 args.calib_samples, log)}
        write(args.out, result)


def write(path: Path, result: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"written {path}")


if __name__ == "__main__":
    main()
