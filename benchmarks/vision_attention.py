"""The vision encoder's attention on ONNX Runtime's CPU: ``--vision-ops portable`` vs ``onnxruntime``.

A phone-agent step sends one 1080x2400 screenshot: 13,416 patches in one vision-encoder call, which
attends every patch to every other. The portable graph spells each block's attention as
MatMul -> Softmax -> MatMul (what TensorRT fuses into one kernel); ONNX Runtime's CPU runs that as
written and holds the ``heads x N x N`` scores (12 x 13,416^2 x 4 B = 8.6 GB a copy at the real
dims). The onnxruntime flavour spells it as ``com.microsoft`` ``MultiHeadAttention``, which ONNX
Runtime's CPU kernel runs as flash attention, in tiles.

1. **One attention** at the real vision tower's shape (``--heads`` 12 x ``--head-dim`` 128) for
   each ``--patches`` count, as each flavour's graph spells it (and as opset 23's ``Attention``, for
   reference), with random inputs.
2. **Whole encoders** (``--export DIR``, repeatable): each export's fp32 vision encoder on one
   image of ``--grid`` patches (default 172x78: 1092x2408 px, a 1080x2400 screenshot), random pixels,
   the host's own feed; the features of the exports are compared with the first one's.

Every case runs in its own spawned process (``screenshot_step.in_child``), so each peak RSS (``VmHWM``) is that case's alone.
Writes ``--out`` (JSON) and prints a table.

    python benchmarks/vision_attention.py [--patches 4096,13416] [--export EXPORT ...] [--threads 2]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
if str(ROOT) not in sys.path:  # the package, for a checkout without an install
    sys.path.insert(0, str(ROOT))

from screenshot_step import in_child  # noqa: E402 - a spawned process per case, as that benchmark runs its backends
FLAVOURS = ("portable", "onnxruntime")
#: single-attention cases: the two flavours' spellings, and opset 23's Attention for reference (not a flavour:
#: ONNX Runtime 1.24's CPU kernel of it holds the scores as the portable graph does)
SPELLINGS = (*FLAVOURS, "opset23-attention")


def attention_graph(flavour: str, heads: int, head_dim: int) -> bytes:
    """One attention as the ``flavour``'s vision graph spells it (inputs q, k, v; output out)."""
    from onnx import TensorProto, helper

    if flavour == "onnxruntime":
        nodes = [helper.make_node("MultiHeadAttention", ["q", "k", "v"], ["out"], domain="com.microsoft",
                                  num_heads=heads, scale=head_dim ** -0.5)]
        shape: list[Any] = [1, "N", heads * head_dim]
    elif flavour == "opset23-attention":
        nodes = [helper.make_node("Attention", ["q", "k", "v"], ["out"], q_num_heads=heads, kv_num_heads=heads,
                                  scale=head_dim ** -0.5)]
        shape = [1, "N", heads * head_dim]
    else:
        nodes = [helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
                 helper.make_node("MatMul", ["q", "kt"], ["scores"]),
                 helper.make_node("Mul", ["scores", "scale"], ["scaled"]),
                 helper.make_node("Softmax", ["scaled"], ["weights"], axis=-1),
                 helper.make_node("MatMul", ["weights", "v"], ["out"])]
        shape = [1, heads, "N", head_dim]
    inputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name in "qkv"]
    scale = [helper.make_tensor("scale", TensorProto.FLOAT, [], [head_dim ** -0.5])] if flavour == "portable" else []
    graph = helper.make_graph(nodes, "attention", inputs, [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
                              scale)
    opsets = [helper.make_opsetid("", 23), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets).SerializeToString()


def attention_case(flavour: str, patches: int, heads: int, head_dim: int, threads: int) -> dict[str, Any]:
    """(child) One attention of ``patches`` patches: seconds and the process's peak RSS."""
    import numpy as np

    from trt_pipeline.bench.memory import peak_rss_bytes
    from trt_pipeline.runtime.onnxruntime_runner import session as ort_session

    with tempfile.TemporaryDirectory(prefix="attention.") as scratch:
        graph = Path(scratch) / f"{flavour}.onnx"
        graph.write_bytes(attention_graph(flavour, heads, head_dim))
        session = ort_session(graph, threads)
    shape = (1, heads, patches, head_dim) if flavour == "portable" else (1, patches, heads * head_dim)
    rng = np.random.default_rng(0)
    feed = {name: rng.standard_normal(shape, dtype=np.float32) for name in "qkv"}
    start = time.perf_counter()
    session.run(None, feed)
    seconds = time.perf_counter() - start
    return {"flavour": flavour, "patches": patches, "seconds": round(seconds, 3),
            "peak_rss_gb": round(peak_rss_bytes() / 1e9, 3)}


def encoder_case(export: str, grid: tuple[int, int], threads: int, features_out: str) -> dict[str, Any]:
    """(child) ``export``'s fp32 vision encoder on one image of ``grid`` patches: seconds and peak RSS."""
    import numpy as np
    import torch

    from trt_pipeline.artifacts import read_export_manifest
    from trt_pipeline.bench.memory import peak_rss_bytes
    from trt_pipeline.models.glm4v.generation import HostAssets
    from trt_pipeline.models.glm4v.stepper import FeedBuilder
    from trt_pipeline.runtime.onnxruntime_runner import onnx_path
    from trt_pipeline.runtime.onnxruntime_runner import session as ort_session

    manifest = read_export_manifest(export)
    assets = HostAssets.from_export_dir(export, verify=False)
    patches = grid[0] * grid[1]
    rng = np.random.default_rng(patches)
    pixels = torch.from_numpy(rng.standard_normal((patches, assets.dims.vision.patch_dim), dtype=np.float32))
    (feed,) = FeedBuilder(assets).vision_feeds(pixels, torch.tensor([[1, grid[0], grid[1]]]))
    session = ort_session(onnx_path(export, "fp32", "vision_encoder", verify=False), threads)
    loaded = peak_rss_bytes()
    wanted = {i.name for i in session.get_inputs()}
    start = time.perf_counter()
    (features,) = session.run(None, {name: np.asarray(value) for name, value in feed.items() if name in wanted})
    seconds = time.perf_counter() - start
    np.save(features_out, features)
    return {"export": export, "vision_ops": manifest.vision_ops, "patches": patches, "seconds": round(seconds, 3),
            "peak_rss_gb": round(peak_rss_bytes() / 1e9, 2),
            "rss_after_load_gb": round(loaded / 1e9, 2), "image_tokens": int(features.shape[0])}


def compare_features(paths: list[str]) -> list[dict[str, float]]:
    """Max abs difference and cosine of each export's features against the first export's."""
    import numpy as np

    first = np.load(paths[0]).astype(np.float64).ravel()
    rows = []
    for path in paths[1:]:
        other = np.load(path).astype(np.float64).ravel()
        cosine = float(first @ other / (np.linalg.norm(first) * np.linalg.norm(other)))
        rows.append({"max_abs": float(np.abs(first - other).max()), "cosine": cosine})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patches", default="4096,13416", help="patch counts of the single-attention cases ('' for none)")
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--export", action="append", default=[], help="an export folder whose vision encoder runs whole")
    parser.add_argument("--grid", default="172x78", help="the whole-encoder image in patches, HxW [1092x2408 px]")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "vision_attention.json")
    args = parser.parse_args()
    import onnxruntime

    record: dict[str, Any] = {
        "command": "python " + " ".join(["benchmarks/vision_attention.py", *sys.argv[1:]]),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "onnxruntime": onnxruntime.__version__, "threads": args.threads, "heads": args.heads, "head_dim": args.head_dim,
        "attention": [], "encoders": [],
    }
    for patches in [int(p) for p in args.patches.split(",") if p]:
        for flavour in SPELLINGS:
            row = in_child(attention_case, flavour, patches, args.heads, args.head_dim, args.threads)
            record["attention"].append(row)
            print(f"attention {flavour:>17} N={patches:>6}: {row['seconds']:8.2f} s, peak RSS {row['peak_rss_gb']:.2f} GB")
    grid = tuple(int(n) for n in args.grid.lower().split("x"))
    with tempfile.TemporaryDirectory(prefix="vision-attention.") as scratch:
        paths = []
        for index, export in enumerate(args.export):
            paths.append(str(Path(scratch) / f"features_{index}.npy"))
            row = in_child(encoder_case, str(Path(export).resolve()), grid, args.threads, paths[-1])
            record["encoders"].append(row)
            print(f"encoder {row['vision_ops']:>11} {row['patches']} patches: {row['seconds']:8.1f} s, "
                  f"peak RSS {row['peak_rss_gb']:.2f} GB ({export})")
        for row, diff in zip(record["encoders"][1:], compare_features(paths) if len(paths) > 1 else []):
            row["vs_first"] = diff
            print(f"  features vs the first export: max abs {diff['max_abs']:.3g}, cosine {diff['cosine']:.9f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
