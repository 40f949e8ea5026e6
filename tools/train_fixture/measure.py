"""How peaked a checkpoint's next-token distributions are on the held-out prompts.

For each held-out prompt (``calibration/heldout``, text and image) transformers generates
``max_new_tokens`` greedily; at every generated step we record the top-1 probability and the
top-1/top-2 logit margin. A random checkpoint has flat distributions (tiny: median margin ~0.1
logits), so a quantized variant flips near-ties; a trained one has large margins where it is sure.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from .corpus import ROOT


def _heldout_inputs(processing: Any) -> list[tuple[str, bool, Any]]:
    from trt_pipeline.quantize.dataset import list_items, load_image

    rows = []
    for item in list_items(ROOT / "calibration", "heldout"):
        images = [[load_image(item)]] if item.has_image else None
        rows.append((item.id, item.has_image, processing([item.instruction], images)))
    return rows


def peakedness(checkpoint: Path | str, max_new_tokens: int = 32) -> dict[str, Any]:
    """Mean top-1 probability and median top-1/top-2 logit margin over greedy steps on held-out prompts."""
    import torch
    from transformers import Glm4vForConditionalGeneration

    from trt_pipeline.models.glm4v.processing import Glm4vProcessing

    processing = Glm4vProcessing(checkpoint)
    model = Glm4vForConditionalGeneration.from_pretrained(str(checkpoint), dtype=torch.float32).eval()
    top1, margins, examples = [], [], {}
    for item_id, has_image, inputs in _heldout_inputs(processing):
        with torch.no_grad():
            out = model.generate(**inputs.hf_kwargs(), max_new_tokens=max_new_tokens, do_sample=False,
                                 output_logits=True, return_dict_in_generate=True,
                                 eos_token_id=processing.eos_token_ids, pad_token_id=processing.pad_token_id)
        for logits in out.logits:
            top = torch.topk(logits[0].float(), 2)
            top1.append(float(torch.softmax(logits[0].float(), -1).max()))
            margins.append(float(top.values[0] - top.values[1]))
        kind = "image" if has_image else "text"
        if sum(e["kind"] == kind for e in examples.values()) < 2:
            examples[item_id] = {"kind": kind, "continuation": processing.tokenizer.decode(
                out.sequences[0, inputs.input_ids.shape[1]:].tolist(), skip_special_tokens=False)}
    return {"steps": len(top1), "mean_top1_prob": statistics.fmean(top1),
            "median_top1_top2_logit_margin": statistics.median(margins),
            "share_margin_below_0.5": sum(m < 0.5 for m in margins) / len(margins), "examples": examples}


__all__ = ["peakedness"]
