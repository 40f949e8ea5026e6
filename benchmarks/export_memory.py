"""Wall time and peak RSS of ``autoglm-trt export`` against checkpoint size (issue 3 acceptance).

Target: peak RSS of the export <= 1.5 x the checkpoint's weight bytes.

Cases (fp32 checkpoints, exported at fp32, so the model in memory is exactly the checkpoint bytes;
a bf16 checkpoint exported at fp32 would need 2x by construction):

* ``small``: the small preset (~110 M parameters, ~0.44 GB);
* ``1b``: the small preset scaled up with ``write_checkpoint(..., overrides=...)`` to 1.18 B
  parameters (text hidden 2048, 24 layers, 16 heads / 2 KV heads, FFN 6144; 4.7 GB): above 2 GB,
  so the ONNX weights go to external data and onnxsim is skipped.

Every step runs in its own child process (checkpoint creation too, so the parent stays small). The
exporting child reports its peak RSS (``VmHWM``, plus a 5 ms RSS sampler) and, per phase of the
export, the largest RSS seen while that phase ran (phases are marked by wrapping the exporter's
functions: loading, ``torch.onnx.export`` per component, ``ONNXProgram.save``, the rename pass,
checker + shape inference, host tables, onnxsim, hashing). ``--no-validate`` throughout: validation
loads transformers' model as a second copy by design and is measured separately when asked
(``--validate``).

    python benchmarks/export_memory.py [--cases small,1b] [--work engines/export-memory] [--keep]
    python benchmarks/export_memory.py --preset phone-9b [--layers 2 --vision-layers 2] [--cap 6G]
        (init + export under 6G, validate (twin) under 12G, checks; see export_memory_phone9b.py)
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
TARGET = 1.5

#: 1.18 B parameters: text 2048 x 24 layers (16 heads, 2 KV heads, head dim 128), FFN 6144.
BIG_OVERRIDES = {
    "text_hidden_size": 2048,
    "text_num_hidden_layers": 24,
    "text_num_attention_heads": 16,
    "text_num_key_value_heads": 2,
    "text_intermediate_size": 6144,
    "mrope_section": [8, 12, 12],
}
CASES = {"small": {}, "1b": BIG_OVERRIDES}

MAKE_CHECKPOINT = r"""
import json, sys
from trt_pipeline.fixtures.checkpoint_factory import write_checkpoint
write_checkpoint(sys.argv[1], preset="small", seed=0, dtype="float32", overrides=json.loads(sys.argv[2]),
                 overwrite=True, max_shard_size="2GB")
"""

CHILD = r"""
import json, sys, time
import torch, onnx, numpy  # imports are part of the baseline, not of the export
from trt_pipeline.bench.memory import RssSampler, current_rss_bytes, peak_rss_bytes
from trt_pipeline.config import ExportConfig
import trt_pipeline.export.exporter as exporter
import trt_pipeline.export.writer as writer
import trt_pipeline.export.onnx_export as onnx_export
import trt_pipeline.graph.simplify as simplify
import trt_pipeline.models.glm4v.model as model_module

checkpoint, out, validate = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
sampler = RssSampler(interval_s=0.005)
current = ["other"]

def wrap(owner, name, label):
    original = getattr(owner, name)
    def wrapper(*args, **kwargs):
        previous = current[0]
        tag = label(*args, **kwargs) if callable(label) else label
        current[0] = tag
        sampler.phase(tag)
        try:
            return original(*args, **kwargs)
        finally:
            current[0] = previous
            sampler.phase(previous)
    setattr(owner, name, wrapper)

wrap(model_module.Glm4vExportModel, "from_pretrained", "load checkpoint")
wrap(writer, "_save_tables", "host tables")
wrap(onnx_export, "export_component", lambda module, spec, *a, **k: f"export {spec.name}: other")
wrap(torch.onnx, "export", lambda *a, **k: current[0].split(":")[0] + ": torch.onnx.export (dynamo)")
wrap(torch.onnx.ONNXProgram, "save", lambda *a, **k: current[0].split(":")[0] + ": ONNXProgram.save")
wrap(onnx_export, "rename_dims", lambda *a, **k: current[0].split(":")[0] + ": rename dims")
wrap(onnx_export, "check_and_infer", lambda *a, **k: current[0].split(":")[0] + ": checker + shape inference")
wrap(simplify, "simplify_model", lambda path, *a, **k: f"onnxsim {path.name}")
wrap(writer, "sha256_file", "hashing")
wrap(writer, "sha256_tree", "hashing")
if validate:
    import trt_pipeline.export.validate as validate_module
    wrap(validate_module, "validate", "validation (transformers reference + ORT)")

baseline = current_rss_bytes()
start = time.perf_counter()
with sampler:
    exporter.export(checkpoint, out, ExportConfig(validate=validate), show_progress=False)
seconds = time.perf_counter() - start
print(json.dumps({"baseline_rss_bytes": baseline, "peak_rss_bytes": max(peak_rss_bytes(), sampler.peak),
                  "seconds": round(seconds, 2), "phase_peak_rss_bytes": sampler.phase_peaks}))
"""


def weight_bytes(checkpoint: Path) -> int:
    return sum(p.stat().st_size for p in checkpoint.glob("*.safetensors"))


def python() -> str:
    return sys.executable


def make_checkpoint(path: Path, overrides: dict) -> float:
    start = time.perf_counter()
    subprocess.run([python(), "-c", MAKE_CHECKPOINT, str(path), json.dumps(overrides)], check=True)
    return time.perf_counter() - start


def measure(checkpoint: Path, out: Path, validate: bool) -> dict:
    if out.exists():
        shutil.rmtree(out)
    proc = subprocess.run([python(), "-c", CHILD, str(checkpoint), str(out), "1" if validate else "0"],
                          check=True, capture_output=True, text=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    ckpt = weight_bytes(checkpoint)
    phases = result.pop("phase_peak_rss_bytes")
    result.update(
        checkpoint_bytes=ckpt,
        onnx_bytes=sum(p.stat().st_size for p in (out / "onnx" / "fp32").glob("*") if p.is_file()),
        ratio_peak_to_checkpoint=round(result["peak_rss_bytes"] / ckpt, 3),
        ratio_added_to_checkpoint=round((result["peak_rss_bytes"] - result["baseline_rss_bytes"]) / ckpt, 3),
        meets_target=result["peak_rss_bytes"] <= TARGET * ckpt,
        phase_peak_rss_bytes=dict(sorted(phases.items(), key=lambda kv: -kv[1])),
        dominant_phase=max(phases, key=phases.get),
    )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="small,1b")
    parser.add_argument("--work", type=Path, default=ROOT / "engines" / "export-memory")
    parser.add_argument("--validate", action="store_true", help="also measure export + validation")
    parser.add_argument("--keep", action="store_true", help="keep checkpoints and exports")
    parser.add_argument("--out", type=Path, default=RESULTS / "export_memory.json")
    parser.add_argument("--baseline", type=Path, action="append", default=[],
                        help="earlier result files (e.g. before a fix) embedded under `baseline` for comparison")
    parser.add_argument("--preset", choices=["phone-9b"], help="real-dimension run under memcap (export_memory_phone9b.py)")
    parser.add_argument("--cap", default="6G", help="memcap limit for --preset")
    parser.add_argument("--layers", type=int, help="--preset: text layers (default: all 40)")
    parser.add_argument("--vision-layers", type=int, help="--preset: vision layers (default: all 24)")
    parser.add_argument("--record", type=Path, help="--preset: record a run made by hand in this folder "
                                                     "(ck/, ex/, init.log, export.log, validate.log) instead of running")
    args = parser.parse_args()
    if args.preset:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from export_memory_phone9b import main_phone9b

        return main_phone9b(args)
    rows = {}
    for case in args.cases.split(","):
        checkpoint = args.work / case / "checkpoint"
        if not (checkpoint / "config.json").is_file():
            print(f"{case}: writing checkpoint", file=sys.stderr)
            make_checkpoint(checkpoint, CASES[case])
        from trt_pipeline.models.info import checkpoint_info  # headers only: keeps this parent process small

        info = checkpoint_info(checkpoint)
        print(f"{case}: exporting ({weight_bytes(checkpoint) / 1e9:.2f} GB checkpoint)", file=sys.stderr)
        row = measure(checkpoint, args.work / case / "export", validate=False)
        row["parameters"] = info.total_parameters
        row["dtype"] = info.dtype
        row["overrides"] = CASES[case]
        if args.validate:
            row["with_validation"] = measure(checkpoint, args.work / case / "export-validated", validate=True)
        rows[case] = row
        print(f"{case}: {row['parameters'] / 1e9:.2f} B params, checkpoint {row['checkpoint_bytes'] / 1e9:.2f} GB, "
              f"export {row['seconds']:.0f} s, peak RSS {row['peak_rss_bytes'] / 1e9:.2f} GB = "
              f"{row['ratio_peak_to_checkpoint']:.2f}x (target <= {TARGET}x), dominated by {row['dominant_phase']}",
              file=sys.stderr)
        if not args.keep:
            shutil.rmtree(args.work / case, ignore_errors=True)
    record = {
        "command": f"python benchmarks/export_memory.py --cases {args.cases}" + (" --validate" if args.validate else ""),
        "target": f"peak RSS of the export <= {TARGET}x checkpoint weight bytes",
        "notes": "fp32 checkpoints exported at fp32; export without validation (--no-validate); each export in a "
                 "fresh child process; peak RSS = max(VmHWM, 5 ms RSS sampling); baseline = RSS after importing "
                 "torch, onnx and trt_pipeline",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "results": rows,
    }
    if args.baseline:
        record["baseline_note"] = (
            "baseline: the same measurement before two memory fixes (commit of this script): "
            "trt_pipeline/export/exporter.py freed the torch model but a `modules` dict still referenced its weights "
            "through onnxsim; trt_pipeline/graph/simplify.py loaded every model twice (a full `original` copy for the "
            "node count + the model for onnxsim)")
        record["baseline"] = {}
        for path in args.baseline:
            earlier = json.loads(path.read_text())
            for case, row in earlier["results"].items():
                record["baseline"][case] = {k: row[k] for k in ("peak_rss_bytes", "ratio_peak_to_checkpoint", "seconds",
                                                                "dominant_phase", "phase_peak_rss_bytes") if k in row}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
