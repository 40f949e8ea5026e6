#!/usr/bin/env python3
"""The small preset in bf16 and fp16 (issue 12): export, validate and greedy tokens in the same dtype.

    autoglm-trt init-checkpoint --preset small --dtype bfloat16 --out WORK/checkpoint
    memcap 6G -- autoglm-trt export WORK/checkpoint --out WORK/export-DTYPE --dtype DTYPE --no-validate \
        --max-seq 384 --max-kv 512                                  # DTYPE: bfloat16, float16
    autoglm-trt validate WORK/export-DTYPE --full                   # vs transformers in DTYPE
    same_dtype_tokens(WORK/export-DTYPE, WORK/checkpoint, 32)       # every held-out prompt, 32 tokens

The bf16 checkpoint is the source of both: bf16 is exported as it is, fp16 is the checkpoint's
values rounded to fp16 (the FP16 variant of a bf16 model). transformers runs in the same dtype
for the comparison. Each export runs under memcap + ``/usr/bin/time -v`` (the export row of the
scaling table); validation and tokens run in this process after it.

    python benchmarks/small_dtypes.py [--work /tmp/small-dtypes] [--keep] [--max-items N]
        [--dtypes bfloat16,float16] [--reuse]

``--dtypes`` runs some of the two (one process each can run side by side on the same WORK);
``--reuse`` keeps WORK's checkpoint and an export (and its validation report) already there. The
JSON is written after each dtype, so a stopped run keeps what it finished.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from export_memory_phone9b import CLI, capped, folder_bytes  # noqa: E402

RANGES = ["--max-seq", "384", "--max-kv", "512"]


def validation_summary(report: dict) -> dict:
    rows = report["results"]
    return {
        "passed": report["passed"], "mode": report["mode"], "backend": report["backend"],
        "reference_dtype": report["reference_dtype"], "checks": len(rows),
        "worst_max_abs": report["worst_max_abs"],
        "worst_error_over_drift": max((r["max_abs"] / r["reference_drift"] for r in rows if r["reference_drift"]),
                                      default=None),
        "worst_drift": max((r["reference_drift"] or 0.0 for r in rows), default=0.0),
    }


def one_dtype(work: Path, checkpoint: Path, dtype: str, max_items: int | None, reuse: bool = False) -> dict:
    from trt_pipeline.export.dtype_tokens import same_dtype_tokens
    from trt_pipeline.export.twin_validate import validate_export

    out = work / f"export-{dtype}"
    if reuse and (out / "export.json").is_file():
        row: dict = {"export": "reused (made by an earlier run on this WORK)"}
    else:
        shutil.rmtree(out, ignore_errors=True)
        row = {"export": capped([*CLI, "export", str(checkpoint), "--out", str(out), "--dtype", dtype,
                                 "--no-validate", *RANGES], "6G")}
        if row["export"]["rc"]:
            return row
    row["export_bytes"] = folder_bytes(out / "onnx")
    manifest = json.loads((out / "export.json").read_text())
    saved = out / "reports" / f"validation-{manifest['precision']}.json"
    start = time.perf_counter()
    if reuse and saved.is_file():
        row["validation"] = {**validation_summary(json.loads(saved.read_text())), "reused": str(saved)}
    else:
        report = validate_export(out, checkpoint, manifest["precision"], mode="full", show_progress=False)
        row["validation"] = {**validation_summary(report.to_dict()), "seconds": round(time.perf_counter() - start, 1)}
    start = time.perf_counter()
    tokens = same_dtype_tokens(out, checkpoint, 32, max_items)
    row["tokens"] = {**tokens.to_dict(),
                     "max_new_tokens": 32, "divergences": tokens.divergences,
                     "seconds": round(time.perf_counter() - start, 1)}
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/small-dtypes"))
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--max-items", type=int, default=None, help="held-out prompts (default: all)")
    parser.add_argument("--dtypes", default="bfloat16,float16")
    parser.add_argument("--reuse", action="store_true", help="keep WORK's checkpoint and finished exports")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "small_dtypes.json")
    args = parser.parse_args()
    checkpoint = args.work / "checkpoint"
    record: dict = {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "load_average": os.getloadavg(),
                    "machine": "2 cores shared by 4-8 helpers; every run niced; wall times are noisy",
                    "max_items": args.max_items, "dtypes": {}}
    if not (args.reuse and (checkpoint / "config.json").is_file()):
        shutil.rmtree(args.work, ignore_errors=True)
        record["init_checkpoint"] = capped([*CLI, "init-checkpoint", "--preset", "small", "--dtype", "bfloat16",
                                            "--out", str(checkpoint)], "6G")
    record["checkpoint_bytes"] = sum(p.stat().st_size for p in checkpoint.glob("*.safetensors"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for dtype in args.dtypes.split(","):
        record["dtypes"][dtype] = one_dtype(args.work, checkpoint, dtype, args.max_items, args.reuse)
        record["load_average_end"] = os.getloadavg()
        args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    if not args.keep:
        shutil.rmtree(args.work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
