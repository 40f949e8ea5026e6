"""Decoder graphs side by side in plain ``onnxruntime.InferenceSession`` (no host loop, no runtime around it).

Separates the graph from the runtime that drives it: genai's ``model.onnx`` and our ``decoder.onnx``
run in the same onnxruntime, same session options, fed by :func:`decode_profile.decode_feed`
(decode at 64/512 cached tokens, prefill of 16/256 tokens on an empty cache), interleaved round by
round. ``--threads 1`` (default) times the CPU of the calling thread, which runs the session, so
a machine loaded by other processes does not inflate it. Speed = baseline ms / graph ms (the first
graph is the baseline). Writes JSON with ``uptime`` before and after.

    flock /tmp/bench.lock python benchmarks/plain_session_ab.py BASELINE.onnx OTHER.onnx [...] \\
        [--rounds 5] [--json benchmarks/results/plain_session_ab.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from decode_profile import decode_feed

CASES = {"decode @64": {"past_sequence_length": 64, "total_sequence_length": 65},
         "decode @512": {"past_sequence_length": 512, "total_sequence_length": 513},
         "prefill 16": {"sequence_length": 16, "past_sequence_length": 0, "total_sequence_length": 16},
         "prefill 256": {"sequence_length": 256, "past_sequence_length": 0, "total_sequence_length": 256}}


def sessions(models: list[str], threads: int) -> dict[str, tuple[Any, dict[str, Any]]]:
    import onnxruntime as ort

    made = {}
    for model in models:
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads, options.log_severity_level = threads, 1, 3
        session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        made[model] = (session, {case: decode_feed(session, 0, {"kv_cache_dim": 64, **dims}) for case, dims in CASES.items()})
    return made


def measure(made: dict[str, tuple[Any, dict[str, Any]]], rounds: int, threads: int) -> dict[tuple[str, str], list[float]]:
    """Per (model, case): the per-round median ms; models alternate their order every round."""
    clock = time.thread_time if threads == 1 else time.perf_counter
    models = list(made)
    result: dict[tuple[str, str], list[float]] = {(m, c): [] for m in models for c in CASES}
    for index in range(rounds):
        for case in CASES:
            for model in models if index % 2 == 0 else models[::-1]:
                session, feeds = made[model]
                for _ in range(2):
                    session.run(None, feeds[case])
                samples = []
                for _ in range(10 if case.startswith("decode") else 4):
                    start = clock()
                    session.run(None, feeds[case])
                    samples.append(clock() - start)
                result[(model, case)].append(statistics.median(samples) * 1e3)
    return result


def main(argv: list[str] | None = None) -> int:
    import onnxruntime

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    before = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    result = measure(sessions(args.models, args.threads), args.rounds, args.threads)
    base = args.models[0]
    rows = [{"case": case, "model": model, "ms": round(statistics.median(result[(model, case)]), 3),
             "speed_vs_first": round(statistics.median(b / x for b, x in zip(result[(base, case)], result[(model, case)])), 3),
             "rounds_ms": [round(v, 3) for v in result[(model, case)]]} for case in CASES for model in args.models]
    for row in rows:
        print(f"{row['case']:12s} {row['ms']:9.2f} ms  speed vs first {row['speed_vs_first']:.3f}  {row['model']}")
    if args.json:
        args.json.write_text(json.dumps({
            "command": "python benchmarks/plain_session_ab.py " + " ".join(argv or sys.argv[1:]),
            "onnxruntime": onnxruntime.__version__, "threads": args.threads,
            "clock": "CPU time of the calling thread" if args.threads == 1 else "wall",
            "uptime": {"before": before, "after": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()},
            "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
