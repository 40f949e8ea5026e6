"""What a decode step costs around the session: the bench's step vs the same feed bound vs a plain run.

For one export and precision, on one thread (CPU time of the calling thread, which runs the session),
interleaved round by round:

* ``step``: one ``DecoderStepper.decode`` as ``autoglm-trt bench`` times it (host feed building,
  ``BoundOrtRunner`` IO binding, cache bookkeeping), the cache put back after every step;
* ``bound infer``: the runner's ``infer`` on one prepared feed (IO binding, no host feed work);
* ``plain run``: ``InferenceSession.run`` on that feed (ONNX Runtime allocates the outputs);
* ``kept rerun`` (a batch-of-one ``KeptDecode`` stepper only): its kept binding run again right after a
  step, back to back, nothing done between runs: the graph's own time with the cache written in place,
  so ``step - kept rerun`` is what the Python loop around the run costs (incl. what it evicts);
* ``step host`` / ``bound infer host``: the same calls' CPU time minus the CPU time spent inside
  ONNX Runtime's ``run_with_iobinding`` during them, i.e. the host work itself, measured on the
  real steps (so with the caches as the kernels leave them), immune to the run's own noise.

``step - plain run`` (the host work as this bench first defined it) is derived from the medians.

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

import numpy as np


class TimedRuns:
    """Stands in for a ``BoundOrtRunner``'s session: counts the CPU time spent inside its runs."""

    def __init__(self, session) -> None:
        self.session, self._sess, self.ns = session, self, 0

    def run_with_iobinding(self, binding, run_options=None) -> None:
        binding = getattr(binding, "_iobinding", binding)  # the public wrapper or its C binding
        start = time.thread_time_ns()
        self.session._sess.run_with_iobinding(binding, run_options)
        self.ns += time.thread_time_ns() - start

    def __getattr__(self, name: str):
        return getattr(self.session, name)


def cpu_ms(fn, reps: int, after=None, runs: TimedRuns | None = None) -> tuple[float, float | None]:
    """Median CPU ms of ``fn`` and, with ``runs``, median CPU ms of ``fn`` outside the session runs."""
    samples, host = [], []
    for _ in range(reps):
        inside = runs.ns if runs is not None else 0
        start = time.thread_time_ns()
        fn()
        total = time.thread_time_ns() - start
        samples.append(total / 1e6)
        if runs is not None:
            host.append((total - (runs.ns - inside)) / 1e6)
        if after is not None:
            after()
    return statistics.median(samples), (statistics.median(host) if host else None)


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
    # the prepared feed gets arrays of its own: an inplace cache's feed holds views of the stepper's arena
    # one row longer than the filled cache, and such a reader makes every timed step copy the cache first
    feed = {name: np.array(value) for name, value in feed.items()}
    runner, session = backend.decoder, backend.decoder.sess
    runs = runner.sess = TimedRuns(session)
    cases = {"step": (step, after), "bound infer": (lambda: runner.infer(feed, check_inputs=False), None),
             "plain run": (lambda: session.run(None, dict(feed)), None)}
    kept = backend.stepper.kept
    if kept is not None:
        def kept_rerun() -> None:  # the binding as the last step left it: same row rewritten, same logits
            session._sess.run_with_iobinding(runner._c_binding, None)

        cases["kept rerun"] = (kept_rerun, None)
    rounds: dict[str, list[float]] = {name: [] for name in [*cases, "step host", "bound infer host"]}
    for _ in range(args.rounds):
        for name, (fn, undo) in cases.items():
            if name == "kept rerun":
                step()  # bind the kept feed of a real step; rewound after the reruns
                total, _ = cpu_ms(fn, args.reps)
                after()
            else:
                total, host = cpu_ms(fn, args.reps, undo, runs if name != "plain run" else None)
                if host is not None:
                    rounds[f"{name} host"].append(host)
            rounds[name].append(total)
    runner.sess = session
    backend.close()
    result = {name: round(statistics.median(values), 3) for name, values in rounds.items()}
    result["step - plain run"] = round(result["step"] - result["plain run"], 3)
    if "kept rerun" in result:
        result["step - kept rerun"] = round(result["step"] - result["kept rerun"], 3)
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
