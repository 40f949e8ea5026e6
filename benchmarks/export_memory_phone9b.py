"""The real-dimension 9B under a memory cap (issue 12): ``--preset phone-9b`` of export_memory.py.

Runs, each in its own process under ``memcap CAP`` (a memory cgroup; its peak counts page cache,
which the kernel reclaims under the cap) and ``/usr/bin/time -v`` (peak RSS of the process):

1. ``autoglm-trt init-checkpoint --preset phone-9b --with-weights [--layers N --vision-layers N]``
   (streaming writer, bf16, 5 GB Hub shards);
2. ``autoglm-trt export CK --no-validate`` (defaults: dtype auto = bf16, streaming above 2 GiB;
   ``--max-seq/--max-kv`` raised so one prefill can carry the largest image);
3. ``autoglm-trt validate OUT`` under ``memcap 12G`` (the twin validation: the model does not fit);
4. checks on the result: ``onnx.checker`` on the path, every initializer's sha256 equal to its
   checkpoint tensor, export.json's dtype, output bytes.

Writes ~20 GB twice for the full model: run it alone, niced, and delete the folders afterwards
(the default; ``--keep`` keeps them). ``--record WORK`` records a run made by hand instead: it reads
``WORK/{init,export,validate}.log`` (memcap's and ``time -v``'s lines), runs the checks on
``WORK/ck`` and ``WORK/ex`` and takes the numbers of ``WORK/ex/reports/validation-bf16.json``.
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


def parse_capped(text: str) -> dict:
    """memcap's last line and ``time -v``'s peak RSS / wall / exit status out of a run's stderr."""
    memcap = re.search(r"memcap: rc=(\d+) peak=([\d.]+) GiB limit=([\d.]+) GiB wall=(\d+)s", text)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    command = re.search(r'Command being timed: "(.*)"', text)
    return {
        "command": command.group(1) if command else None,
        "rc": int(memcap.group(1)) if memcap else None,
        "cap_gib": float(memcap.group(3)) if memcap else None,
        "cgroup_peak_gib": float(memcap.group(2)) if memcap else None,
        "max_rss_gib": round(int(rss.group(1)) / 1024**2, 3) if rss else None,
        "wall_s": int(memcap.group(4)) if memcap else None,
    }


def capped(cmd: list[str], cap: str) -> dict:
    """Run ``cmd`` niced under memcap + time -v; returns rc, cgroup peak, max RSS and wall time."""
    start = time.perf_counter()
    proc = subprocess.run(["nice", str(MEMCAP), cap, "--", "/usr/bin/time", "-v", *cmd], capture_output=True, text=True)
    result = {**parse_capped(proc.stderr), "command": " ".join(cmd[3:] if cmd[:3] == CLI else cmd), "cap": cap,
              "rc": proc.returncode, "wall_s": round(time.perf_counter() - start, 1)}
    if proc.returncode:
        result["stderr_tail"] = proc.stderr.splitlines()[-15:]
    return result


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def checks(out: Path, checkpoint: Path) -> dict:
    import onnx

    from trt_pipeline.export.streaming import verify_initializer_hashes

    manifest = json.loads((out / "export.json").read_text())
    result = {"export_json_dtype": manifest["dtype"], "streamed": manifest.get("streamed"),
              "output_bytes": folder_bytes(out)}
    for name, entry in manifest["components"].items():
        path = out / entry["file"]
        onnx.checker.check_model(str(path), full_check=False)  # on the path: works above 2 GB
        start = time.perf_counter()
        hashes = verify_initializer_hashes(path, checkpoint)
        result[name] = {"checker": "passed", "bytes": entry["bytes"], "initializers_hash_equal": hashes["equal"],
                        "initializers_checked": hashes["checked"], "differ": hashes["differ"][:5],
                        "hash_seconds": round(time.perf_counter() - start, 1)}
    return result


def validation_numbers(out: Path) -> dict:
    """Mode, plan, structure/hash checks and per-point errors of the (twin) validation report."""
    path = out / "reports" / "validation-bf16.json"
    if not path.is_file():
        return {"missing": str(path)}
    report = json.loads(path.read_text())
    keep = ("compute", "sequence_length", "past_sequence_length", "num_patches")
    return {
        "passed": report["passed"], "mode": report["mode"], "backend": report["backend"], "plan": report.get("plan"),
        "twin": {k: v for k, v in report.get("twin", {}).items()},
        "results": [{**{k: r["point"].get(k) for k in keep if k in r["point"]}, "output": r["output"],
                     "max_abs": r["max_abs"], "cosine": r["cosine"], "atol": r["atol"],
                     # the reference's own drift: transformers-bf16 vs fp32 (bf16 points), transformers-fp32
                     # vs float64 (fp32 points); and the export's own distance from that wider reference
                     "reference_drift": r["reference_drift"], "drift_against": r.get("drift_against"),
                     "export_drift": r.get("export_drift"), "passed": r["passed"]}
                    for r in report["results"]],
    }


def record_existing(work: Path) -> dict:
    """A run made by hand in ``work`` (ck/, ex/, init.log, export.log, validate.log): its numbers + checks."""
    row = {}
    for step in ("init", "export", "validate"):
        log_file = work / f"{step}.log"
        if log_file.is_file():
            row["init_checkpoint" if step == "init" else step] = {**parse_capped(log_file.read_text()),
                                                                 "log": str(log_file)}
    row["checkpoint_bytes"] = sum(p.stat().st_size for p in (work / "ck").glob("*.safetensors"))
    row["export_bytes"] = folder_bytes(work / "ex" / "onnx")
    row["validation"] = validation_numbers(work / "ex")
    row["checks"] = checks(work / "ex", work / "ck")
    return row


def run(work: Path, cap: str, layers: int | None, vision_layers: int | None, keep: bool,
        validate_cap: str = "12G") -> dict:
    checkpoint, out = work / "checkpoint", work / "export"
    for folder in (checkpoint, out):
        shutil.rmtree(folder, ignore_errors=True)
    reduced = [*(["--layers", str(layers)] if layers else []), *(["--vision-layers", str(vision_layers)] if vision_layers else [])]
    row = {"init_checkpoint": capped([*CLI, "init-checkpoint", "--preset", "phone-9b", "--with-weights", *reduced,
                                      "--out", str(checkpoint)], cap)}
    if row["init_checkpoint"]["rc"] == 0:
        row["checkpoint_bytes"] = folder_bytes(checkpoint)
        row["export"] = capped([*CLI, "export", str(checkpoint), "--out", str(out), "--no-validate"], cap)
        if row["export"]["rc"] == 0:
            row["export_bytes"] = folder_bytes(out)
            row["validate"] = capped([*CLI, "validate", str(out), "--checkpoint", str(checkpoint)], validate_cap)
            row["validation"] = validation_numbers(out)
            row["checks"] = checks(out, checkpoint)
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    return row


def main_phone9b(args) -> int:
    if args.record:
        row = record_existing(args.record)
    else:
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
    return 0 if row.get("export", {}).get("rc") == 0 and row.get("validation", {}).get("passed") else 1
