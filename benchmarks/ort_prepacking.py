"""What ONNX Runtime's weight prepacking costs and buys for an Android bundle's decoder.

ONNX Runtime prepacks ``MatMulNBits`` (int4) weights at session load into the layout of its int8-compute
kernel. On the real 9B's int4 decoder that is ~3 GB on top of the 5.49 GB graph: a lot on a 12-16 GB phone.
``session.disable_prepacking`` skips it. This script measures both, each in its own process, on one of the
bundle's reference calls (``bundle/golden.py``): session load time, RSS after load, peak RSS, the call's time
(median over ``--iterations``, the first ``--warmup`` untimed), and the logits against the recorded ones.

    python benchmarks/ort_prepacking.py BUNDLE [--threads 2] [--call 2] [--iterations 8] [--iterations-off 2]

Writes ``benchmarks/results/ort_prepacking.json`` (or ``--out``).
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

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def measure(bundle: Path, prepacking: bool, threads: int, call_number: int, iterations: int, warmup: int) -> dict[str, Any]:
    """In this process: one session of the bundle's decoder, one reference call timed."""
    import numpy as np
    import onnxruntime as ort

    from trt_pipeline.bench.memory import current_rss_bytes, peak_rss_bytes
    from trt_pipeline.bundle.contents import EXPORT_SUBDIR
    from trt_pipeline.bundle.golden import compare_output, read_index
    from trt_pipeline.bundle.onnxruntime_bundle import graph_paths, reference_settings

    reference = bundle / "reference"
    index = read_index(reference)
    call = index["calls"][call_number]
    feed = {name: np.load(reference / spec["file"]) for name, spec in call["inputs"].items()}
    want = np.load(reference / call["outputs"]["logits"]["file"])
    info = json.loads((bundle / "bundle.json").read_text())
    decoder = graph_paths(bundle / EXPORT_SUBDIR, info["precision"], verify=False)["decoder"]
    options = reference_settings(threads).session_options()  # what the reference was recorded with
    if not prepacking:
        options.add_session_config_entry("session.disable_prepacking", "1")
    start = time.perf_counter()
    session = ort.InferenceSession(str(decoder), options, providers=["CPUExecutionProvider"])
    load_s, loaded = time.perf_counter() - start, current_rss_bytes()
    times, logits = [], None
    for _ in range(warmup + iterations):
        start = time.perf_counter()
        logits = session.run(["logits"], feed)[0]
        times.append(time.perf_counter() - start)
    check = compare_output(call_number, "decoder", "logits", logits, want, index["cosine_floor"])
    return {"prepacking": prepacking, "load_s": round(load_s, 2), "rss_after_load_gb": round(loaded / 1e9, 2),
            "peak_rss_gb": round(peak_rss_bytes() / 1e9, 2), "call_ms_median": round(statistics.median(times[warmup:]) * 1e3, 1),
            "call_ms_all": [round(t * 1e3, 1) for t in times], "vs_recorded": {"cosine": round(check.cosine, 6),
            "max_abs_error": check.max_abs_error, "argmax_equal": check.argmax_equal, "passes_floor": check.passed}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path, help="an ONNX Runtime bundle (`bundle --target android-arm64`)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--call", type=int, default=2, help="the reference call to time (2: the first decode step)")
    parser.add_argument("--iterations", type=int, default=8)
    parser.add_argument("--iterations-off", type=int, default=2, help="timed calls without prepacking (slow)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--child", choices=("on", "off"), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULTS / "ort_prepacking.json")
    args = parser.parse_args(argv)
    if args.child:
        on = args.child == "on"
        print(json.dumps(measure(args.bundle, on, args.threads, args.call, args.iterations if on else args.iterations_off,
                                 args.warmup)))
        return 0
    rows = []
    for mode in ("on", "off"):  # a process each: the peak RSS is the session's own
        child = [sys.executable, __file__, str(args.bundle), "--child", mode, "--threads", str(args.threads), "--call",
                 str(args.call), "--iterations", str(args.iterations), "--iterations-off", str(args.iterations_off),
                 "--warmup", str(args.warmup)]
        rows.append(json.loads(subprocess.run(child, check=True, capture_output=True, text=True).stdout.splitlines()[-1]))
        print(json.dumps(rows[-1]))
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    record = {"command": "python benchmarks/ort_prepacking.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "bundle": str(args.bundle), "threads": args.threads, "call": args.call, "uptime_after": uptime, "rows": rows}
    from trt_pipeline.artifacts.atomic import write_json_atomic

    write_json_atomic(args.out, record)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
