"""Peak memory and wall time of ``autoglm-trt precision fp16 / int4`` on the small preset.

WHY: ModelOpt AutoCast's reference run kept every tensor of every calibration feed (the vision
encoder's per-layer ``heads x patches^2`` attention maps included): ``precision int4`` peaked above
13 GB and was OOM-killed once. ``trt_pipeline.graph.reference_ranges`` reduces the ranges inside
the graph, one feed at a time. This script records the peak so the two can be compared:

* ``memcap`` (``/work/shared/tools/memcap``): the cgroup's peak (RSS + page cache it touched) under
  a hard limit (``--cap``); rc 137 means the kernel killed the run for memory;
* max RSS from ``/usr/bin/time -v``; wall time; the precision manifest's AutoCast report
  (reference runner, tensors tracked, bytes kept) and the accuracy gate's verdict.

Each (variant, calib-samples) runs in its own process with ``PYTHONPATH=--tree`` (``--tree`` of a
checkout before the fix gives the *before* row), under ``flock /tmp/bench.lock``. Rows are merged
into ``--out`` under ``--label``.

    python benchmarks/precision_memory.py --label after [--variants fp16,int4] [--calib-samples 2,8]
    python benchmarks/precision_memory.py --label before --tree /path/to/checkout-before-fix

``--export DIR`` measures an existing fp32 export instead (e.g. a real-width one from ``init-checkpoint
--preset phone-9b --with-weights --layers N``), ``--precision-arg`` passes options to ``precision``
(``--precision-arg=--method --precision-arg=rtn``), ``--out`` keeps such runs in a file of their own.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MEMCAP = Path("/work/shared/tools/memcap")
CLI = [sys.executable, "-c", "import sys; from trt_pipeline.cli import app; sys.argv[0] = 'autoglm-trt'; sys.exit(app())"]
_MEMCAP_RE = re.compile(r"memcap: rc=(?P<rc>-?\d+) peak=(?P<peak>[\d.]+) GiB limit=[\d.]+ GiB wall=(?P<wall>\d+)s")
_RSS_RE = re.compile(r"Maximum resident set size \(kbytes\): (?P<kb>\d+)")


def run_cli(args: list[str], tree: Path, log: Path, cap: str | None = None) -> subprocess.CompletedProcess:
    """``autoglm-trt ARGS`` from ``tree`` under the bench lock (+ memcap and /usr/bin/time -v when ``cap``)."""
    command = [*CLI, *args]
    if cap:
        command = [str(MEMCAP), cap, "--", "/usr/bin/time", "-v", *command]
    command = ["flock", "/tmp/bench.lock", "nice", "-n", "10", *command]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    with log.open("w") as handle:  # cwd: not this checkout (python -c puts the cwd first on sys.path)
        return subprocess.run(command, env=env, cwd=log.parent, stdout=handle, stderr=subprocess.STDOUT, check=False)


def prepare_export(work: Path, tree: Path) -> Path:
    """The small preset's checkpoint and fp32 export (``--no-validate``), made once per work folder."""
    checkpoint, export = work / "checkpoint", work / "export"
    if not (checkpoint / "config.json").is_file():
        run_cli(["init-checkpoint", "--preset", "small", "--out", str(checkpoint)], tree, work / "init.log")
    if not (export / "export.json").is_file():
        done = run_cli(["export", str(checkpoint), "--out", str(export), "--no-validate", "--max-seq", "512"], tree, work / "export.log")
        if done.returncode:
            raise SystemExit(f"export failed, see {work / 'export.log'}")
    return export


def autocast_summary(export: Path, variant: str) -> dict:
    """The vision encoder's AutoCast entry of the precision manifest (reference run + kept fp32 count)."""
    manifest = export / "onnx" / variant / "manifest.json"
    if not manifest.is_file():
        return {}
    data = json.loads(manifest.read_text())
    out = {"accuracy": (data.get("accuracy") or {}).get("passed", data.get("accuracy"))}
    for component, entry in data.get("components", {}).items():
        int4 = entry.get("int4") or {}
        if int4:
            out.setdefault("int4", {})[component] = {k: int4.get(k) for k in ("method_used", "block_size", "opset_from",
                                                                             "seconds")}
            out["int4"][component].update(nodes_quantized=len(int4.get("nodes_quantized", [])),
                                          weight_bytes=(int4.get("weight_bytes") or {}).get("total"))
        auto = entry.get("autocast") or int4.get("autocast")
        if auto:
            out[component] = {k: auto.get(k) for k in ("reference_runner", "reference_feeds", "reference_tensors",
                                                        "reference_kept_bytes", "nodes", "nodes_fp16", "seconds")}
            out[component]["nodes_kept_fp32"] = len(auto.get("nodes_kept_fp32", []))
    return out


def measure(export: Path, variant: str, samples: int, tree: Path, cap: str, log: Path, extra: list[str] = ()) -> dict:
    start = time.perf_counter()
    done = run_cli(["precision", variant, str(export), "--calib-samples", str(samples), *extra], tree, log, cap=cap)
    text = log.read_text(errors="replace")
    memcap = _MEMCAP_RE.search(text)
    rss = _RSS_RE.search(text)
    row = {
        "variant": variant,
        "calib_samples": samples,
        "rc": done.returncode,
        "oom_killed": done.returncode == 137,
        "memcap_peak_gib": float(memcap["peak"]) if memcap else None,
        "max_rss_gib": round(int(rss["kb"]) / 2**20, 3) if rss else None,
        "wall_s": float(memcap["wall"]) if memcap else None,  # memcap's: excludes the wait for the bench lock
        "wall_with_lock_wait_s": round(time.perf_counter() - start, 1),
        "cap": cap,
        "export": str(export),
        "precision_args": list(extra),
    }
    row.update(autocast_summary(export, variant) if done.returncode == 0 else {})
    return row


def _describe(export: Path) -> str:
    """The export's model in a few words: layers, width, parameters, stored bytes of its fp32 graphs."""
    config = json.loads((export / "hf" / "config.json").read_text())
    text = config.get("text_config", config)
    stored = sum(f.stat().st_size for f in (export / "onnx" / "fp32").iterdir() if f.is_file())
    return (f"{text.get('num_hidden_layers')} decoder layers, hidden {text.get('hidden_size')}, vocab "
            f"{text.get('vocab_size')}, fp32 graphs {stored / 1e9:.2f} GB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--label", required=True, help="row group in the results file (e.g. before / after)")
    parser.add_argument("--tree", type=Path, default=ROOT, help="source tree put on PYTHONPATH")
    parser.add_argument("--tree-note", help="what --tree is, when it is not a git checkout (e.g. an archive of a commit)")
    parser.add_argument("--variants", default="fp16,int4")
    parser.add_argument("--calib-samples", default="2,8", help="comma-separated calibration sample counts")
    parser.add_argument("--cap", default="16G", help="memcap limit")
    parser.add_argument("--work", type=Path, default=Path("/tmp/precision-memory"))
    parser.add_argument("--out", type=Path, default=RESULTS / "precision_memory.json")
    parser.add_argument("--export", type=Path, help="an existing fp32 export to measure (default: the small preset's, made)")
    parser.add_argument("--precision-arg", action="append", default=[], help="an option for `precision` (repeatable)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    export = args.export or prepare_export(args.work, args.tree)
    commit = subprocess.run(["git", "-C", str(args.tree), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    rows = []
    for variant in args.variants.split(","):
        for samples in (int(s) for s in args.calib_samples.split(",")):
            log = args.work / f"{args.label}.{variant}.{samples}.log"
            row = measure(export, variant, samples, args.tree, args.cap, log, args.precision_arg)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
    record = json.loads(args.out.read_text()) if args.out.is_file() else {}
    record.update({
        "what": (f"autoglm-trt precision on the fp32 export {export} ({_describe(export)})" if args.export else
                 "autoglm-trt precision fp16/int4 on the small preset export (init-checkpoint --preset small; "
                 "export --max-seq 512 --no-validate: the held-out prompts need > 256 tokens)")
                + ": memcap cgroup peak, max RSS (/usr/bin/time -v), wall time",
        "command": "python benchmarks/precision_memory.py --label LABEL [--tree CHECKOUT]"
                   + (" --export EXPORT " + " ".join(f"--precision-arg={a}" for a in args.precision_arg) if args.export else ""),
    })
    runs = record.setdefault("runs", {}).setdefault(args.label, {})
    runs["tree_commit"] = commit.strip() or args.tree_note or runs.get("tree_commit", "")
    for row in rows:  # a row replaces the earlier one of the same variant and sample count
        row.update(created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), load=os.getloadavg()[0])
        kept = [r for r in runs.get("rows", []) if (r["variant"], r["calib_samples"], r.get("export")) !=
                (row["variant"], row["calib_samples"], row["export"])]
        runs["rows"] = sorted([*kept, row], key=lambda r: (r["variant"], r["calib_samples"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
