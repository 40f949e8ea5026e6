"""Exact tokens on a real 1080x2400 phone screenshot: chunked ONNX Runtime vs transformers (issue 11).

The first acceptance point of issue 11. A phone agent step sends one full-resolution screenshot;
at 1080x2400 GLM-4.1V's processor resizes it to 1092x2408 = 13,416 patches = 3,354 image tokens.
This script checks that the exported small-preset models serve that step exactly:

1. renders a 1080x2400 PNG phone screen with the calibration renderer (``tools/make_calibration``,
   its settings screen at full phone resolution; no downloads);
2. ``init-checkpoint --preset small`` (seed 0) and ``export --workload phone-agent --max-seq 1024
   --max-kv 4096 --max-pixels 2629536 --no-validate`` (1092*2408 = 2,629,536), unless present;
3. greedy ``generate`` of ``--new-tokens`` tokens on that screenshot + an agent instruction with
   ``--backend ort`` (the prompt prefilled in chunks of the export's ``sequence_length`` max) and
   with transformers (``--backend torch``), asserting token-for-token equality;
4. the vision-feature error (ORT vision encoder vs transformers' ``get_image_features``) and the
   prefill last-position logit error (chunked ORT vs transformers on the full prompt);
5. writes ``benchmarks/results/screenshot_step.json`` and prints a table.

Each backend runs in its own spawned process, so each peak RSS (``ru_maxrss``) is that backend's.

    python benchmarks/screenshot_step.py [--work engines/screenshot-step] [--new-tokens 32]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import datetime as dt
import json
import math
import multiprocessing
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # tools/ (the screen renderer) lives beside the package
    sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
SCREEN = (1080, 2400)
MAX_PIXELS = 1092 * 2408  # the processor's resize of a 1080x2400 screen: no downscaling
INSTRUCTION = (
    "You are a phone agent. Task: turn on Wi-Fi and connect to Home-5G. Look at the current screen, "
    "think step by step inside <think></think>, then answer with one action inside <answer></answer>, "
    'e.g. do(action="Tap", element=[x,y]).'
)


def render_screenshot(path: Path, size: tuple[int, int] = SCREEN, screen: str = "settings_zh") -> Path:
    """A realistic phone screen at ``size`` (width, height), drawn by the calibration renderer."""
    from tools.make_calibration.fonts import Fonts
    from tools.make_calibration.generate import render
    from tools.make_calibration.spec import load_spec

    spec = next(s for s in load_spec().screens if s.name == screen)
    image = render(dataclasses.replace(spec, size=size), Fonts(), {})
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")
    return path


def prepare(work: Path, max_seq: int, max_kv: int) -> tuple[Path, Path, dict[str, float]]:
    """The small checkpoint and its phone-agent export (made once; reused when present, with their timings)."""
    from trt_pipeline.config import ExportConfig
    from trt_pipeline.export.exporter import export
    from trt_pipeline.fixtures.checkpoint_factory import write_checkpoint

    ckpt, out, saved = work / "ckpt", work / "export", work / "prepare_timings.json"
    timings: dict[str, float] = json.loads(saved.read_text()) if saved.is_file() else {}
    if not (ckpt / "config.json").is_file():
        start = time.perf_counter()
        write_checkpoint(ckpt, "small", seed=0, overwrite=True)
        timings["init_checkpoint_s"] = round(time.perf_counter() - start, 1)
    if not (out / "export.json").is_file():
        start = time.perf_counter()
        cfg = ExportConfig(workload="phone-agent", max_seq=max_seq, max_kv=max_kv, max_pixels=MAX_PIXELS,
                           validate=False)
        export(ckpt, out, cfg, show_progress=False)
        timings["export_s"] = round(time.perf_counter() - start, 1)
    saved.write_text(json.dumps(timings))
    return ckpt, out, timings


def _inputs(hf_dir: Path, image: Path) -> tuple[Any, Any]:
    from trt_pipeline.models.glm4v.processing import Glm4vProcessing

    processing = Glm4vProcessing(hf_dir, max_pixels=MAX_PIXELS)
    return processing, processing([INSTRUCTION], [[image]])


def _peak_rss() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_ort(out: str, image: str, new_tokens: int, dump: str) -> dict[str, Any]:
    """Chunked ORT generate (child process); features and prefill logits saved to ``dump``."""
    import numpy as np
    import torch

    from trt_pipeline.generate import export_chunk_size
    from trt_pipeline.models.glm4v.generation import HostAssets, encode_images, greedy_generate
    from trt_pipeline.runtime.onnxruntime_runner import ort_component_runners

    processing, inputs = _inputs(Path(out) / "hf", Path(image))
    chunk = export_chunk_size(Path(out))
    assets = HostAssets.from_export_dir(out)
    vision, decoder = ort_component_runners(out, "fp32")
    with vision, decoder:
        start = time.perf_counter()
        encode_images(assets, vision, inputs)  # timed alone; greedy_generate encodes again
        vision_s = time.perf_counter() - start
        start = time.perf_counter()
        result = greedy_generate(assets, vision, decoder, inputs, new_tokens, processing.eos_token_ids,
                                 processing.pad_token_id, collect_logits=True, chunk_size=chunk)
        generate_s = time.perf_counter() - start
    np.save(f"{dump}/ort_features.npy", result.image_features.numpy())
    np.save(f"{dump}/ort_prefill_logits.npy", result.step_logits[0].numpy())
    np.save(f"{dump}/ort_step_logits.npy", torch.stack(result.step_logits, dim=1).numpy())
    prompt = int(inputs.input_ids.shape[1])
    return {
        "tokens": result.token_lists()[0], "text": processing.decode(result.token_lists()[0]),
        "prompt_tokens": prompt, "image_tokens": inputs.num_image_tokens,
        "image_grid_thw": inputs.image_grid_thw.tolist(), "patches": int(inputs.pixel_values.shape[0]),
        "chunk_size": chunk, "chunks": math.ceil(prompt / chunk),
        "vision_s": round(vision_s, 2), "generate_s": round(generate_s, 2), "peak_rss_bytes": _peak_rss(),
    }


def run_transformers(ckpt: str, image: str, new_tokens: int, dump: str) -> dict[str, Any]:
    """transformers' ``get_image_features`` and ``generate`` (child process), logits saved to ``dump``."""
    import numpy as np
    import torch
    from transformers import Glm4vForConditionalGeneration

    processing, inputs = _inputs(Path(ckpt), Path(image))
    model = Glm4vForConditionalGeneration.from_pretrained(ckpt, dtype=torch.float32).eval()
    with torch.no_grad():
        start = time.perf_counter()
        feats = model.model.get_image_features(inputs.pixel_values, inputs.image_grid_thw)
        vision_s = time.perf_counter() - start
        feats = getattr(feats, "pooler_output", feats)
        feats = torch.cat(list(feats)) if isinstance(feats, (tuple, list)) else feats
        start = time.perf_counter()
        out = model.generate(**inputs.hf_kwargs(), max_new_tokens=new_tokens, do_sample=False,
                             eos_token_id=processing.eos_token_ids or None, pad_token_id=processing.pad_token_id,
                             output_logits=True, return_dict_in_generate=True)
        generate_s = time.perf_counter() - start
    tokens = out.sequences[0, inputs.input_ids.shape[1]:].tolist()
    np.save(f"{dump}/hf_features.npy", feats.float().numpy())
    np.save(f"{dump}/hf_prefill_logits.npy", out.logits[0].float().numpy())
    np.save(f"{dump}/hf_step_logits.npy", torch.stack(out.logits, dim=1).float().numpy())
    return {"tokens": tokens, "text": processing.decode(tokens), "vision_s": round(vision_s, 2),
            "generate_s": round(generate_s, 2), "attn_implementation": model.config._attn_implementation,
            "peak_rss_bytes": _peak_rss()}


def in_child(fn: Any, *args: Any) -> dict[str, Any]:
    """Run ``fn(*args)`` in a fresh spawned process (its own peak RSS, its memory returned after)."""
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        return pool.submit(fn, *args).result()


def errors(dump: Path, name: str) -> dict[str, float]:
    """max abs error, cosine and reference max abs of ORT vs transformers for one saved pair."""
    import numpy as np

    ort = np.load(dump / f"ort_{name}.npy").astype(np.float64).ravel()
    ref = np.load(dump / f"hf_{name}.npy").astype(np.float64).ravel()
    if ort.shape != ref.shape:
        raise AssertionError(f"{name}: ORT shape {ort.shape} != transformers shape {ref.shape}")
    return {"max_abs": float(np.abs(ort - ref).max()),
            "cosine": float(ort @ ref / (np.linalg.norm(ort) * np.linalg.norm(ref))),
            "ref_max_abs": float(np.abs(ref).max()), "elements": int(ref.size)}


def margins(dump: Path) -> dict[str, float]:
    """Per-step top-1 minus top-2 logit of transformers (how close a step was to another token)."""
    import numpy as np

    ref = np.load(dump / "hf_step_logits.npy")[0]  # [steps, vocab]
    top2 = np.sort(ref, axis=-1)[:, -2:]
    gaps = top2[:, 1] - top2[:, 0]
    return {"min_top1_top2_margin": float(gaps.min()), "median_top1_top2_margin": float(np.median(gaps))}


def first_mismatch(a: list[int], b: list[int]) -> int | None:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None if len(a) == len(b) else min(len(a), len(b)))


def table(result: dict[str, Any]) -> str:
    ort, hf, err = result["ort"], result["transformers"], result["errors"]
    rows = [
        ("screenshot", f"{result['screenshot']['size']} -> grid {ort['image_grid_thw'][0]}"),
        ("patches / image tokens", f"{ort['patches']} / {ort['image_tokens']}"),
        ("prompt tokens / chunks", f"{ort['prompt_tokens']} / {ort['chunks']} x <= {ort['chunk_size']}"),
        ("tokens equal", f"{result['tokens_equal']} ({result['agreement']}/{len(hf['tokens'])})"),
        ("vision max abs / cosine", f"{err['vision_features']['max_abs']:.3e} / {err['vision_features']['cosine']:.9f}"),
        ("prefill logit max abs / cosine",
         f"{err['prefill_logits']['max_abs']:.3e} / {err['prefill_logits']['cosine']:.9f}"),
        ("all steps logit max abs / cos",
         f"{err['all_step_logits']['max_abs']:.3e} / {err['all_step_logits']['cosine']:.9f}"),
        ("min top1-top2 margin / distinct", f"{result['margins']['min_top1_top2_margin']:.3e} / {result['distinct_tokens']}"),
        ("ORT vision / generate s", f"{ort['vision_s']} / {ort['generate_s']}"),
        ("HF vision / generate s", f"{hf['vision_s']} / {hf['generate_s']}"),
        ("peak RSS ORT / HF GB", f"{ort['peak_rss_bytes'] / 1e9:.2f} / {hf['peak_rss_bytes'] / 1e9:.2f}"),
    ]
    return "\n".join(f"{k:32s} {v}" for k, v in rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=ROOT / "engines" / "screenshot-step")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--max-seq", type=int, default=1024)
    ap.add_argument("--max-kv", type=int, default=4096)
    ap.add_argument("--out", type=Path, default=RESULTS / "screenshot_step.json")
    args = ap.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    image = render_screenshot(args.work / "screenshot_1080x2400.png")
    ckpt, out, timings = prepare(args.work, args.max_seq, args.max_kv)
    ort = in_child(run_ort, str(out), str(image), args.new_tokens, str(args.work))
    hf = in_child(run_transformers, str(ckpt), str(image), args.new_tokens, str(args.work))
    mismatch = first_mismatch(ort["tokens"], hf["tokens"])
    result = {
        "command": "python benchmarks/screenshot_step.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "created": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "preset": "small", "seed": 0, "instruction": INSTRUCTION, "max_pixels": MAX_PIXELS,
        "export": {"workload": "phone-agent", "max_seq": args.max_seq, "max_kv": args.max_kv, "validate": False},
        "screenshot": {"size": list(SCREEN), "renderer": "tools/make_calibration settings_zh",
                       "png_bytes": image.stat().st_size},
        "timings": timings, "ort": ort, "transformers": hf,
        "tokens_equal": ort["tokens"] == hf["tokens"],
        "agreement": len(hf["tokens"]) if mismatch is None else mismatch,
        "errors": {"vision_features": errors(args.work, "features"),
                   "prefill_logits": errors(args.work, "prefill_logits"),
                   "all_step_logits": errors(args.work, "step_logits")},
        "margins": margins(args.work),
        "distinct_tokens": len(set(hf["tokens"])),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    print(table(result))
    if not result["tokens_equal"]:
        print(f"FAIL: tokens differ from position {mismatch}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
