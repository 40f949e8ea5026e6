"""What a decode step costs around the session: the bench's step vs the same feed bound vs a plain run.

For one export and precision, on one thread (CPU time of the calling thread, which runs the session),
interleaved round by round:

* ``step``: one ``DecoderStepper.decode`` as ``autoglm-trt bench`` times it (host feed building,
  ``BoundOrtRunner`` IO binding, cache bookkeeping), the cache put back after every step;
* ``bound infer``: the runner's ``infer`` on one prepared feed (IO binding, no host feed work);
* ``plain run``: ``InferenceSession.run`` on that feed (ONNX Runtime allocates the outputs).

    flock /tmp/bench.lock python benchmarks/step_overhead.py EXPORT [--precision int4] [--context 64]
        [--json benchmarks/results/step_overhead.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path


def cpu_ms(fn, reps: int, after=None) -> float:
    samples = []
    for _ in range(reps):
        start = time.thread_time_ns()
        fn()
        samples.append((time.thread_time_ns() - start) / 1e6)
        if after is not None:
            after()
    return statistics.median(samples)


def main(argv: list[str] | None = None) -> int:
    from trt_pipeline.bench.backends import BACKENDS, BenchSetup

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("export", type=Path)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--context", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    before = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    backend = BACKENDS["ort"](f"ort-{args.precision}", BenchSetup(args.export, threads=1), args.precision)
    backend.load()
    step, after = backend.decode_fn(args.context)
    feed, _ = backend.stepper.prepare_decode(backend._ids(1, salt=2).view(-1))
    runner, session = backend.decoder, backend.decoder.sess
    cases = {"step": (step, after), "bound infer": (lambda: runner.infer(feed, check_inputs=False), None),
             "plain run": (lambda: session.run(None, dict(feed)), None)}
    rounds: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, (fn, undo) in cases.items():
            rounds[name].append(cpu_ms(fn, args.reps, undo))
    backend.close()
    result = {name: round(statistics.median(values), 3) for name, values in rounds.items()}
    print(json.dumps({"precision": args.precision, "context": args.context, "median_ms": result}))
    if args.json:
        args.json.write_text(json.dumps({
            "command": "python benchmarks/step_overhead.py " + " ".join(argv or sys.argv[1:]),
            "clock": "CPU time of the calling thread (1 intra-op thread)", "precision": args.precision,
            "context": args.context, "median_ms": result, "rounds_ms": rounds,
            "uptime": {"before": before, "after": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()},
        }, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
