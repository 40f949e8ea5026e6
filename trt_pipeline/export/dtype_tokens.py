"""Greedy tokens of a bf16/fp16 export against transformers run in the same dtype.

A same-dtype export is not expected to match transformers-fp32 token for token: the bf16 model
itself does not. What it must do is continue a prompt the way transformers does *in that dtype*.
For every held-out prompt (with its image) transformers generates with ``generate(do_sample=False)``
in the export's dtype, the export with :func:`~trt_pipeline.models.glm4v.generation.greedy_generate`
over its runners (fp16: ONNX Runtime; bf16: the traced export modules, ONNX Runtime's CPU provider
having no bf16 kernels), and :class:`~trt_pipeline.accuracy.tokens.TokenAgreement` does the
arithmetic. One model is in memory at a time.
"""

from __future__ import annotations

import gc
from pathlib import Path

from trt_pipeline.accuracy.tokens import TokenAgreement


def same_dtype_tokens(
    out_dir: Path | str, checkpoint: Path | str, max_new_tokens: int = 32, max_items: int | None = None,
    heldout_dir: Path | None = None, threshold: float = 0.0,
) -> TokenAgreement:
    """Token agreement of ``OUT/onnx/<its precision>`` with transformers in the export's dtype."""
    from trt_pipeline.artifacts import read_export_manifest
    from trt_pipeline.compare.data import load_heldout
    from trt_pipeline.compare.tokens import backend_tokens, reference_tokens
    from trt_pipeline.export.validate import component_runner, load_reference
    from trt_pipeline.models.glm4v.generation import HostAssets
    from trt_pipeline.models.glm4v.processing import Glm4vProcessing

    out_dir, checkpoint = Path(out_dir), Path(checkpoint)
    manifest = read_export_manifest(out_dir)
    processing = Glm4vProcessing(manifest.layout.hf_dir, max_pixels=manifest.max_pixels)
    heldout = load_heldout(processing, heldout_dir, max_items)
    model = load_reference(checkpoint, manifest.dtype)
    expected = reference_tokens(model, processing, heldout, max_new_tokens)
    del model
    gc.collect()
    assets = HostAssets.from_export_dir(out_dir)
    runners = [component_runner(out_dir, manifest.precision, manifest.dtype, checkpoint, component)
               for component in ("vision_encoder", "decoder")]
    rows, forced = backend_tokens(assets, *runners, processing, heldout, max_new_tokens, references=expected)
    backend = "torch-export" if manifest.dtype == "bfloat16" else "ort"
    agreement = TokenAgreement(f"{backend}-{manifest.precision}", manifest.precision, threshold)
    for item, reference, candidate, teacher_forced in zip(heldout, expected, rows, forced or [], strict=True):
        agreement.add(item.id, reference, candidate, teacher_forced)
    return agreement


__all__ = ["same_dtype_tokens"]
