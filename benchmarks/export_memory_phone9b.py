"""The real-dimension 9B under a memory cap (issue 12): ``--preset phone-9b`` of export_memory.py.

Runs, each in its own process under ``memcap CAP`` (a memory cgroup; its peak counts page cache,
which the kernel reclaims under the cap) and ``/usr/bin/time -v`` (peak RSS of the process):

1. ``autoglm-trt init-checkpoint --preset phone-9b --with-weights [--layers N --vision-layers N]``
   (streaming writer, bf16, 5 GB Hub shards);
2. ``autoglm-trt export CK --no-validate`` (defaults: dtype auto = bf16, streaming above 2 GiB;
   ``--max-seq/--max-kv`` raised so one prefill can carry the largest image);
3. checks on the result: ``onnx.checker`` on the path, every initializer's sha256 equal to its
   checkpoint tensor, export.json's dtype.

Writes ~20 GB twice for the full model: run it alone, niced, and delete the folders afterwards
(the default; ``--keep`` keeps them).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MEMCAP = Path(os.environ.get("MEMCAP", ROOT.parent / "shared" / "tools" / "memcap"))
CLI = [sys.executable, "-c", "from trt_pipeline.cli import app; app()"]


def capped(cmd: list[str], cap: str) -> dict:
    """Run ``cmd`` under memcap + time -v; returns rc, cgroup peak, max RSS and wall time."""
    start = time.perf_counter()
    proc = subprocess.run([str(MEMCAP), cap, "--", "/usr/bin/time", "-v", *cmd], capture_output=True, text=True)
    memcap = re.search(r"memcap: rc=(\d+) peak=([\d.]+) GiB limit=([\d.]+) GiB wall=(\d+)s", proc.stderr)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    result = {
        "command": " ".join(cmd[3:] if cmd[:3] == CLI else cmd), "cap": cap, "rc": proc.returncode,
        "cgroup_peak_gib": float(memcap.group(2)) if memcap else None,
        "max_rss_gib": round(int(rss.group(1)) / 1024**2, 3) if rss else None,
        "wall_s": round(time.perf_counter() - start, 1),
    }
    if proc.returncode:
        result["stderr_tail"] = proc.stderr.splitlines()[-15:]
    return result


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def checks(out: Path, checkpoint: Path) -> dict:
    import onnx

    from trt_pipeline.export.streaming import verify_initializer_hashes

    manifest = json.loads((out / "export.json").read_text())
    result = {"export_json_dtype": manifest["dtype"], "streamed": manifest.get("streamed")}
    for name, entry in manifest["components"].items():
        path = out / entry["file"]
        onnx.checker.check_model(str(path), full_check=False)  # on the path: works above 2 GB
        start = time.perf_counter()
        hashes = verify_initializer_hashes(path, checkpoint)
        result[name] = {"checker": "passed", "bytes": entry["bytes"], "initializers_hash_equal": hashes["equal"],
                        "initializers_checked": hashes["checked"], "differ": hashes["differ"][:5],
                        "hash_seconds": round(time.perf_counter() - start, 1)}
    return result


def run(work: Path, cap: str, layers: int | None, vision_layers: int | None, keep: bool) -> dict:
    checkpoint, out = work / "checkpoint", work / "export"
    for folder in (checkpoint, out):
        shutil.rmtree(folder, ignore_errors=True)
    reduced = [*(["--layers", str(layers)] if layers else []), *(["--vision-layers", str(vision_layers)] if vision_layers else [])]
    row = {"init_checkpoint": capped([*CLI, "init-checkpoint", "--preset", "phone-9b", "--with-weights", *reduced,
                                      "--out", str(checkpoint)], cap)}
    if row["init_checkpoint"]["rc"] == 0:
        row["checkpoint_bytes"] = folder_bytes(checkpoint)
        row["export"] = capped([*CLI, "export", str(checkpoint), "--out", str(out), "--no-validate",
                                "--max-seq", "8192", "--max-kv", "8192"], cap)
        if row["export"]["rc"] == 0:
            row["export_bytes"] = folder_bytes(out)
            row["checks"] = checks(out, checkpoint)
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    return row


def main_phone9b(args) -> int:
    row = run(args.work / "phone-9b", args.cap, args.layers, args.vision_layers, args.keep)
    tag = f"-l{args.layers}v{args.vision_layers}" if args.layers or args.vision_layers else ""
    record = {
        "preset": "phone-9b", "layers": args.layers or 40, "vision_layers": args.vision_layers or 24,
        "notes": "cgroup_peak counts page cache (reclaimed under the cap, so a 20 GB stream passes a 6 GB cap); "
                 "max_rss is the process's own peak RSS (/usr/bin/time -v)",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "result": row,
    }
    out = args.out if args.out.name != "export_memory.json" else args.out.with_name(f"export_memory_phone9b{tag}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(row, indent=2), file=sys.stderr)
    print(f"wrote {out}", file=sys.stderr)
    return 0 if row.get("export", {}).get("rc") == 0 else 1
