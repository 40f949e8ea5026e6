#!/usr/bin/env python3
"""Vision-encoder input bytes for one phone screenshot, before and after the dense attention bias went.

A 1080x2400 screenshot is resized by the image processor to 1092x2408 pixels: a 172 x 78 patch
grid = 13,416 patches (3,354 image tokens). The numbers come from the io spec
(:func:`trt_pipeline.models.glm4v.io_spec.vision_spec`) at the real model's dims (``phone-9b``
preset); the model is not run. "Before" is the same spec plus the removed ``attention_bias``
[num_patches, num_patches] float32 input.

Usage::

    .venv/bin/python benchmarks/vision_inputs.py      # -> benchmarks/results/vision_inputs.json
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
GRID = (1, 2408 // 14, 1092 // 14)  # (t, h, w) patches of a 1092x2408 image


def tensor_bytes(spec, sizes: dict[str, int]) -> int:
    shape = [sizes[d] if isinstance(d, str) else d for d in spec.shape]
    return math.prod(shape) * np.dtype(spec.dtype).itemsize


def main() -> None:
    from trt_pipeline.models.glm4v.config import dims_from_dict
    from trt_pipeline.models.glm4v.io_spec import TensorSpec, vision_spec
    from trt_pipeline.models.presets import build_config

    dims = dims_from_dict(build_config("phone-9b").to_dict(), Path("phone-9b"))
    patches = math.prod(GRID)
    sizes = {"num_patches": patches, "num_image_tokens": patches // dims.vision.spatial_merge_size**2}
    after = {t.name: tensor_bytes(t, sizes) for t in vision_spec(dims).inputs}
    dense = TensorSpec("attention_bias", "float32", ("num_patches", "num_patches"))
    before = {**after, dense.name: tensor_bytes(dense, sizes)}
    result = {
        "benchmark": "vision_inputs",
        "preset": "phone-9b",
        "image": {"screenshot": "1080x2400", "resized": "1092x2408", "grid_thw": list(GRID),
                  "num_patches": patches, "num_image_tokens": sizes["num_image_tokens"]},
        "before": {"inputs": before, "total_bytes": sum(before.values())},
        "after": {"inputs": after, "total_bytes": sum(after.values()),
                  "bytes_per_patch": sum(after.values()) // patches},
        "ratio": sum(before.values()) / sum(after.values()),
        "note": "after: one image per encoder call, full attention, no mask input; every input is "
                "[num_patches, fixed] (linear in the patches). Computed from the io spec, model not run.",
    }
    out = HERE / "results" / "vision_inputs.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    mb = 1e6
    print(f"one {GRID[1]}x{GRID[2]}-patch screenshot ({patches} patches), phone-9b vision dims:")
    for label, table in (("before", before), ("after", after)):
        print(f"  {label:6s} {sum(table.values()) / mb:9.1f} MB  " +
              ", ".join(f"{k} {v / mb:.1f} MB" for k, v in table.items()))
    print(f"  {result['ratio']:.1f}x less input; written to {out}")


if __name__ == "__main__":
    main()
