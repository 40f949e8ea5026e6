"""Which ``KV_BLOCK`` (rows an inplace cache's fed views grow by) makes continuous decode fastest.

Two opposing costs, both measured here on one export (an ``--kv-cache inplace`` export whose graph takes
free rows), 1 intra-op thread, CPU time of the calling thread, interleaved round by round:

* ``rows``: one decode step of the graph alone, bound once, fed ``context + 1`` attended rows plus
  ``extra`` free (masked) rows: what ONNX Runtime's CPU ``Attention`` pays for reading rows it masks;
* ``blocks``: ``--steps`` continuous decode steps of ``DecoderStepper`` (the code ``serve`` runs) from
  ``context`` cached tokens, per block size (1 = a new binding every step): what a new binding costs
  against what the free rows cost.

    flock /tmp/bench.lock python benchmarks/kv_block_sweep.py EXPORT --precision int4 --context 64 \\
        [--blocks 1,8,16,32,64] [--extra 0,15,63] [--json benchmarks/results/kv_block_sweep.json]
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

ROOT = Path(__file__).resolve().parents[1]


def graph_step_us(path: Path, context: int, extras: list[int], rounds: int, reps: int = 40) -> dict[int, float]:
    """Median CPU us of one bound decode step per number of free rows (``ort_graph_profile``'s seeded feed and
    in-place binding, the mask 0 on the free rows; one session)."""
    import onnxruntime as ort
    from ort_graph_profile import bind, decode_feed

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    bound = {}
    for extra in extras:
        feed = decode_feed(session, context, {"total_sequence_length": context + 1 + extra})
        feed["attention_mask"] = np.zeros((1, context + 1 + extra), np.int64)
        feed["attention_mask"][0, :context + 1] = 1
        bound[extra] = (bind(session, feed)[0], feed)  # the feed must outlive its binding
    samples: dict[int, list[float]] = {extra: [] for extra in extras}
    for _ in range(rounds):
        for extra, (binding, _) in bound.items():
            times = []
            for _ in range(reps):
                start = time.thread_time_ns()
                session.run_with_iobinding(binding)
                times.append((time.thread_time_ns() - start) / 1e3)
            samples[extra].append(statistics.median(times))
    return {extra: round(statistics.median(values), 1) for extra, values in samples.items()}


def decode_ms(export: Path, precision: str, context: int, blocks: list[int], rounds: int, steps: int) -> dict[int, float]:
    """CPU ms a step of ``steps`` continuous decode steps from ``context`` tokens, per KV block size."""
    import torch

    from trt_pipeline.bench.backends import BACKENDS, BenchSetup
    from trt_pipeline.models.glm4v.stepper import DecoderStepper

    backend = BACKENDS["ort"](f"ort-{precision}", BenchSetup(export, threads=1), precision)
    backend.load()
    steppers = {}
    for block in blocks:
        steppers[block] = DecoderStepper(backend.assets, backend.decoder, check_inputs=False,
                                         contract=backend.stepper.contract, kv_block=block)
        if steppers[block].arena.block != block:
            raise SystemExit(f"{export}: its decoder is not fed in blocks (an inplace export with free rows, "
                             "over IO binding, is needed)")
    prompt, token = backend._ids(context, salt=1), torch.tensor([7])
    samples: dict[int, list[float]] = {block: [] for block in blocks}
    for _ in range(rounds):
        for block, stepper in steppers.items():
            stepper.reset(1)
            stepper.prefill_tokens(prompt)
            for _ in range(40):  # past the slow steps after a fill
                stepper.decode(token)
            stepper.truncate(context, torch.tensor([context]))
            start = time.thread_time_ns()
            for _ in range(steps):
                stepper.decode(token)
            samples[block].append((time.thread_time_ns() - start) / steps / 1e6)
    backend.close()
    return {block: round(statistics.median(values), 3) for block, values in samples.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("export", type=Path)
    parser.add_argument("--precision", default="int4")
    parser.add_argument("--context", type=int, default=64)
    parser.add_argument("--blocks", default="1,8,16,32,64")
    parser.add_argument("--extra", default="0,15,63", help="free rows after the attended ones (graph alone)")
    parser.add_argument("--steps", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # ort_graph_profile, beside this file
    from trt_pipeline.runtime.onnxruntime_runner import onnx_path

    before = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    extras = [int(value) for value in args.extra.split(",")]
    blocks = [int(value) for value in args.blocks.split(",")]
    rows = graph_step_us(onnx_path(args.export, args.precision, "decoder"), args.context, extras, args.rounds)
    per_block = decode_ms(args.export, args.precision, args.context, blocks, args.rounds, args.steps)
    result = {"precision": args.precision, "context": args.context,
              "graph_step_us_by_free_rows": rows, "decode_ms_per_step_by_block": per_block}
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps({
            "command": "python benchmarks/kv_block_sweep.py " + " ".join(argv or sys.argv[1:]),
            "clock": "CPU time of the calling thread (1 intra-op thread)", **result, "rounds": args.rounds,
            "steps": args.steps,
            "uptime": {"before": before, "after": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()},
        }, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
