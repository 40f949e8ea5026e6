"""Interleaved A/B timing of export folders' decoders on ONNX Runtime (one process, same threads).

Compares decoder graphs (e.g. an export made by an older checkout against one made by this one)
with the bench's own backend (``ort-fp32``: the stepper's host work included), alternating the
configurations round by round so machine load hits them alike; the figure per case is the median
over all rounds. ``--clock cpu`` (with ``--threads 1``) times the CPU of the calling thread, which
stays comparable on a machine loaded by other processes. Each argument is ``FOLDER`` or
``FOLDER:noio`` (IO binding off); the first is the baseline of the ratios.

    python benchmarks/graph_ab.py OLD_EXPORT:noio NEW_EXPORT --threads 1 --clock cpu \\
        --json benchmarks/results/graph_ab.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path


def measure(backends: list, kind: str, size: int, rounds: int, reps: int, clock: str) -> list[list[float]]:
    """Samples (ms) per backend of ``kind`` (decode at context ``size`` / prefill of ``size`` tokens)."""
    from trt_pipeline.bench.measure import CLOCKS

    now = CLOCKS[clock]
    samples: list[list[float]] = [[] for _ in backends]
    for _ in range(rounds):
        for index, backend in enumerate(backends):
            fn, after = backend.decode_fn(size) if kind == "decode" else (backend.prefill_fn(size), None)
            for _ in range(2):  # warm-up of this round
                fn()
                if after is not None:
                    after()
            for _ in range(reps):
                start = now()
                fn()
                samples[index].append((now() - start) / 1e6)
                if after is not None:
                    after()
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="+", help="FOLDER or FOLDER:noio")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--precision", default="fp32", help="the precision folder of every export timed (fp32, int4, fp16)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.clock == "cpu" and args.threads != 1:
        parser.error("--clock cpu needs --threads 1")

    from trt_pipeline.bench.backends import BenchSetup, make_backend

    backends = []
    for config in args.configs:
        folder, _, flag = config.partition(":")
        backend = make_backend(f"ort-{args.precision}", BenchSetup(Path(folder), args.threads, io_binding=flag != "noio"))
        backend.load()
        backends.append(backend)
    load_before = os.getloadavg()
    results: dict[str, dict[str, float]] = {config: {} for config in args.configs}
    for kind, sizes, reps in (("decode", (64, 512), 20), ("prefill", (16, 256), 4)):
        for size in sizes:
            for config, samples in zip(args.configs, measure(backends, kind, size, args.rounds, reps, args.clock)):
                results[config][f"{kind}@{size}"] = round(statistics.median(samples), 3)
    for backend in backends:
        backend.close()
    base = results[args.configs[0]]
    record = {
        "command": "python " + " ".join(["benchmarks/graph_ab.py", *sys.argv[1:]]),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "threads": args.threads, "clock": args.clock, "rounds": args.rounds, "precision": args.precision,
        "loadavg": {"before": [round(v, 2) for v in load_before], "after": [round(v, 2) for v in os.getloadavg()]},
        "median_ms": results,
        "speedup_over_first": {config: {case: round(base[case] / value, 3) for case, value in results[config].items()}
                               for config in args.configs[1:]},
    }
    print(json.dumps(record, indent=1))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
