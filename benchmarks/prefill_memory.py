"""Peak memory of one long prefill on ONNX Runtime: last-position logits versus every position (issue 11).

Before ``logits_positions`` the exported decoder computed the LM head for every prompt position;
now the stepper asks for the last one. This script measures what that saves on a real prefill.

Steps (each in its own process, so one run's allocations do not hide the other's):

1. a random ``small`` preset checkpoint (``autoglm-trt init-checkpoint``), unless present;
2. a decoder-only fp32 export with ``--max-seq TOKENS`` (no validation, no onnxsim), unless present;
3. for ``last`` and ``all``: one ``TOKENS``-token prefill (batch 1, empty cache) through
   :class:`~trt_pipeline.models.glm4v.stepper.DecoderStepper` over an ONNX Runtime runner, under
   ``memcap LIMIT`` (a fresh memory cgroup; its peak is what the kernel charged the process,
   page cache included) and reporting its own ``ru_maxrss``.

The logits of a prefill are ``TOKENS x vocab x 4`` bytes when every position is kept; the JSON
also gives that figure for the real vocabulary (151,552) so the small preset's savings can be
scaled to the 9B model.

    python benchmarks/prefill_memory.py [--tokens 4096] [--work engines/prefill-memory] [--limit 6G]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MEMCAP = Path("/work/shared/tools/memcap")
REAL_VOCAB = 151552

CHILD = r"""
import json, resource, sys, time
import torch
from trt_pipeline.models.glm4v.generation import HostAssets
from trt_pipeline.models.glm4v.stepper import DecoderStepper
from trt_pipeline.runtime.onnxruntime_runner import onnx_path, ort_runner

out, tokens, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
assets = HostAssets.from_export_dir(out)
high = min(assets.dims.text.vocab_size, assets.dims.image_start_token_id)
ids = torch.randint(0, high, (1, tokens), generator=torch.Generator().manual_seed(0))
with ort_runner(onnx_path(out, "fp32", "decoder")) as runner:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    stepper = DecoderStepper(assets, runner, check_inputs=False)
    start = time.perf_counter()
    step = stepper.prefill_tokens(ids, logits=mode)
    seconds = time.perf_counter() - start
print(json.dumps({
    "mode": mode,
    "seconds": round(seconds, 2),
    "logits_shape": list(step.logits.shape),
    "logits_bytes": int(step.logits.numel() * 4),
    "rss_before_prefill_bytes": before,
    "ru_maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    "next_token": int(step.last_logits.argmax(-1)[0]),
}))
"""


def cli(*args: str) -> list[str]:
    """``autoglm-trt ARGS`` from the running interpreter's environment."""
    return [str(Path(sys.executable).with_name("autoglm-trt")), *args]


def prepare(work: Path, tokens: int) -> Path:
    checkpoint, export = work / "checkpoint", work / f"export-{tokens}"
    if not (checkpoint / "config.json").is_file():
        subprocess.run(cli("init-checkpoint", "--preset", "small", "--out", str(checkpoint), "--overwrite"), check=True)
    if not (export / "export.json").is_file():
        subprocess.run(cli("export", str(checkpoint), "--out", str(export), "--components", "decoder",
                           "--max-seq", str(tokens), "--max-kv", "64", "--no-validate", "--no-simplify"), check=True)
    return export


def measure(export: Path, tokens: int, mode: str, limit: str) -> dict:
    command = [str(MEMCAP), limit, "--", sys.executable, "-c", CHILD, str(export), str(tokens), mode]
    done = subprocess.run(command, capture_output=True, text=True)
    found = re.search(r"memcap: rc=(\d+) peak=([\d.]+) GiB", done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"{mode} run failed (rc {done.returncode}):\n{done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["memcap_peak_bytes"] = int(float(found.group(2)) * 1024**3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--work", type=Path, default=ROOT / "engines" / "prefill-memory")
    parser.add_argument("--limit", default="6G")
    args = parser.parse_args()
    export = prepare(args.work, args.tokens)
    runs = {mode: measure(export, args.tokens, mode, args.limit) for mode in ("last", "all")}
    if runs["last"]["next_token"] != runs["all"]["next_token"]:
        raise SystemExit(f"last-only and all-position prefills disagree on the next token: {runs}")
    vocab = runs["all"]["logits_shape"][-1]
    report = {
        "command": f"python benchmarks/prefill_memory.py --tokens {args.tokens} --limit {args.limit}",
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "preset": "small",
        "tokens": args.tokens,
        "vocab": vocab,
        "runs": runs,
        "saved_peak_bytes": runs["all"]["memcap_peak_bytes"] - runs["last"]["memcap_peak_bytes"],
        "saved_ru_maxrss_bytes": runs["all"]["ru_maxrss_bytes"] - runs["last"]["ru_maxrss_bytes"],
        "all_position_logits_bytes_at_real_vocab": args.tokens * REAL_VOCAB * 4,
        "notes": "one prefill of TOKENS random text tokens, batch 1, empty cache, ORT CPU fp32; peak = memcap "
                 "cgroup peak (weights mapped + page cache + activations); 'all' is what the decoder computed "
                 "before logits_positions existed.",
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "prefill_memory.json"
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
