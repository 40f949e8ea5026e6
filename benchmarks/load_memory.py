"""Peak RSS while loading a checkpoint with the export-friendly loader (issue 2 acceptance).

Target: peak RSS while loading <= 1.3x the checkpoint's weight bytes (one copy of the weights:
safetensors tensors are memory-mapped and assigned into a model built on the meta device).

Each measurement runs in a fresh child process; the child reports its RSS before loading
(interpreter + torch + transformers imports) and its peak RSS (``ru_maxrss``) after loading, so
the figure isolates what loading adds. Before the baseline the child builds one throwaway
``nn.Embedding`` on the meta device: the first module init maps ~80 MB of torch kernel code into
the process, a fixed cost that does not grow with the model (measured: 79 MB for tiny and small
alike) and would otherwise be charged to the weights. Usage:

    python benchmarks/load_memory.py [--preset small] [--dtype auto|float32] [--out benchmarks/results/load_memory.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
import psutil, torch, safetensors  # imports counted in the baseline, not in the load
import trt_pipeline.models.glm4v.model as m
with torch.device("meta"):  # warm-up: torch lazily maps ~80 MB of kernel code on first nn.Embedding init
    torch.nn.Embedding(2, 2)
base = psutil.Process().memory_info().rss
start = time.perf_counter()
model = m.Glm4vExportModel.from_pretrained(sys.argv[1], dtype=None if sys.argv[2] == "auto" else sys.argv[2])
# Touch every weight so memory-mapped pages are really resident (a lazy map would hide the cost).
total = sum(float(p.float().sum()) * 0 for p in model.parameters())
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"baseline_rss": base, "peak_rss": peak, "seconds": seconds,
                  "param_bytes": sum(p.numel() * p.element_size() for p in model.parameters())}))
"""


def weight_bytes(checkpoint: Path) -> int:
    return sum(p.stat().st_size for p in checkpoint.glob("*.safetensors"))


def measure(checkpoint: Path, dtype: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(checkpoint), dtype], check=True,
                         capture_output=True, text=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    ckpt = weight_bytes(checkpoint)
    added = result["peak_rss"] - result["baseline_rss"]
    result.update(
        checkpoint_bytes=ckpt,
        added_by_loading=added,
        ratio_added_to_checkpoint=round(added / ckpt, 3),
        ratio_peak_to_checkpoint=round(result["peak_rss"] / ckpt, 3),
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--dtype", default="auto", help="auto keeps the checkpoint dtype (no copy)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "load_memory.json")
    args = parser.parse_args()
    from trt_pipeline.fixtures.checkpoint_factory import write_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = write_checkpoint(Path(tmp) / args.preset, preset=args.preset, seed=0)
        rows = {}
        for dtype in ("auto", "float32") if args.dtype == "auto" else (args.dtype,):
            rows[dtype] = measure(checkpoint, dtype)
    record = {
        "command": f"python benchmarks/load_memory.py --preset {args.preset}",
        "preset": args.preset,
        "target": "added RSS while loading <= 1.3x checkpoint bytes",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    for dtype, row in rows.items():
        print(f"{args.preset} dtype={dtype}: checkpoint {row['checkpoint_bytes'] / 1e6:.1f} MB, "
              f"loading added {row['added_by_loading'] / 1e6:.1f} MB "
              f"({row['ratio_added_to_checkpoint']:.2f}x), peak RSS {row['peak_rss'] / 1e6:.1f} MB "
              f"({row['ratio_peak_to_checkpoint']:.2f}x), {row['seconds']:.2f}s")


if __name__ == "__main__":
    main()
