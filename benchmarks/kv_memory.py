"""Peak memory of a long decode on ONNX Runtime: a ``concat`` KV cache against an ``inplace`` one.

A concat decoder returns the whole cache anew every step, so the process holds two caches (the
one fed, the one written) plus whatever the allocator keeps; an inplace decoder writes the new rows
into the fed buffer (``export --kv-cache inplace``, docs/export.md). At the phone agent's contexts
(25k tokens; 80 KB of fp32 cache per token on the 9B) that is gigabytes. This script prefills
``--context`` tokens (in chunks) and decodes ``--steps`` tokens on each export's fp32 decoder,
each run in its own process under ``tools/memcap`` (a memory cgroup: the peak it prints is the
figure), and records the peaks with the cache size the stepper ended with.

    python benchmarks/kv_memory.py CONCAT_EXPORT INPLACE_EXPORT [--context 8192] [--steps 16]
        [--memcap ../shared/tools/memcap] [--json benchmarks/results/kv_memory.json]

(``--child EXPORT`` is the measured process: it prints one JSON line.)
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(export: Path, context: int, steps: int, chunk: int) -> dict:
    """Prefill + decode on one export (this process is the one memcap measures)."""
    import numpy as np
    import torch

    from trt_pipeline.artifacts import read_export_manifest
    from trt_pipeline.models.glm4v.generation import HostAssets
    from trt_pipeline.models.glm4v.stepper import DecoderStepper
    from trt_pipeline.runtime.host_threads import single_thread_host_torch
    from trt_pipeline.runtime.onnxruntime_runner import OrtSettings, onnx_path, ort_runner

    single_thread_host_torch()
    assets = HostAssets.from_export_dir(export)
    runner = ort_runner(onnx_path(export, "fp32", "decoder"), settings=OrtSettings(intra_op_threads=2))
    start = time.perf_counter()
    with runner:
        stepper = DecoderStepper(assets, runner, chunk_size=chunk, check_inputs=False)
        ids = torch.from_numpy(np.random.default_rng(0).integers(3, 2000, (1, context)))
        token = stepper.prefill_tokens(ids).logits[:, -1].argmax(-1)
        for _ in range(steps):
            token = stepper.decode(token).logits[:, -1].argmax(-1)
        cache = sum(array.nbytes for array in stepper.state.past.values())
    status = Path("/proc/self/status").read_text()
    peak_kib = int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1))
    return {"export": str(export), "kv_cache": read_export_manifest(export).kv_cache, "context": context,
            "steps": steps, "cache_mib": round(cache / 2**20, 1), "vmhwm_mib": round(peak_kib / 1024, 1),
            "seconds": round(time.perf_counter() - start, 1)}


def measure(export: Path, args: argparse.Namespace) -> dict:
    """Run :func:`child` under memcap; its JSON line plus memcap's peak."""
    command = [str(args.memcap), args.cap, "--", sys.executable, __file__, "--child", str(export),
               "--context", str(args.context), "--steps", str(args.steps), "--chunk", str(args.chunk)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    record = json.loads(lines[-1])
    peak = re.search(r"peak[^0-9]*([0-9.]+)\s*([KMG]i?B)", done.stdout + done.stderr, re.IGNORECASE)
    record["memcap_peak"] = f"{peak.group(1)} {peak.group(2)}" if peak else None
    record["memcap_output"] = [line for line in (done.stdout + done.stderr).splitlines() if "peak" in line.lower()][-1:]
    return record


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("exports", nargs="*", type=Path)
    parser.add_argument("--child", type=Path, default=None)
    parser.add_argument("--context", type=int, default=8192)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--chunk", type=int, default=512)
    parser.add_argument("--memcap", type=Path, default=ROOT.parent / "shared" / "tools" / "memcap")
    parser.add_argument("--cap", default="8G")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.context, args.steps, args.chunk)))
        return 0
    rows = [measure(export, args) for export in args.exports]
    record = {"command": "python " + " ".join(["benchmarks/kv_memory.py", *sys.argv[1:]]),
              "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rows": rows}
    print(json.dumps(record, indent=1))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
