"""transformers in float64: the yardstick of float32 rounding for the twin's fp32 gate.

An fp32 export and transformers-fp32 compute the same maths with different kernels and summation
orders, so they differ by float32 rounding. How much rounding grows with the width of the
reductions (4,096 / 13,696 in the text model, 1,536 / 13,696 in the vision tower) and with the
length of attention (4,096 patches, 2,560 tokens): a gate fixed on the tiny model (width 64) is too
tight at real widths. So the twin measures it: transformers run on the same inputs with float64
activations gives ``drift64 = |transformers-fp32 - transformers-fp64|``, transformers' own fp32
rounding, and the fp32 point is gated at ``max(atol, FP32_DRIFT_FACTOR x drift64)``: the same triangle
inequality as the bf16 gate (see :func:`trt_pipeline.export.validate._drift_gate`).

What "float64" means here, and why it fits in the memory the twin has (12 GB at the 9B's widths):

* the model is loaded in the checkpoint's own dtype (bf16 for the 9B: no value changes, since bf16,
  fp32 and fp64 all represent a bf16 weight exactly), then only the component being run is widened
  to float64 (the vision tower for the images, then the decoder layers, the other one freed or left
  narrow), so the peak is one component's fp64 weights (3.3 GB for two 9B decoder layers), not the
  15 GB of a whole K=2 twin in fp64;
* the embedding lookup is exact in any dtype: it stays in the stored dtype and its rows are widened;
* the LM head (151,552 x 4,096) stays in the stored dtype and is applied in float64 one block of
  rows at a time (the twin keeps logits at 16 positions per step, so this is cheap);
* transformers' own explicit fp32 casts (RMSNorm variance, the vision rotary's ``q.float()``, the
  position-table resampling, softmax ``dtype=float32``) would narrow a float64 tensor to fp32 and put
  fp32 rounding back into the yardstick. :class:`KeepFloat64` (a ``TorchFunctionMode``, active only
  while the float64 model runs) turns every such narrowing of a float64 tensor into a no-op, so the
  float64 run is float64 end to end without touching transformers' code. (Measured on the 9B's
  vision tower, 2 blocks, 4,096 patches: with the fp32 casts left in, the drift is 8.8e-6.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

#: rows of the LM head widened to float64 at once (16,384 x 4,096 x 8 B = 512 MB)
HEAD_BLOCK_ROWS = 16_384


class Float64Embedding(nn.Module):
    """An embedding table in its stored dtype whose looked-up rows are returned in float64 (exact)."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return nn.functional.embedding(ids, self.weight).double()


class Float64Head(nn.Module):
    """A bias-free linear layer in its stored dtype, applied in float64 a block of rows at a time."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        hidden = hidden.double()
        blocks = [hidden @ self.weight[i: i + HEAD_BLOCK_ROWS].double().T
                  for i in range(0, self.weight.shape[0], HEAD_BLOCK_ROWS)]
        return torch.cat(blocks, dim=-1)


class KeepFloat64(TorchFunctionMode):
    """While active, a call on a float64 ``x`` never narrows: ``x.float()``, ``x.to(torch.float32)``,
    ``softmax(x, dtype=torch.float32)`` keep float64 and float32 operands are widened (module
    docstring); calls on other tensors are unchanged."""

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        wide = bool(args) and isinstance(args[0], torch.Tensor) and args[0].dtype == torch.float64
        if wide and func is torch.Tensor.float:
            return args[0]
        if wide:  # fp32 targets and fp32 operands (grid_sample's fp32 grid) become float64
            args = tuple(_widened(a) for a in args)
            kwargs = {k: _widened(v) for k, v in kwargs.items()}
        return func(*args, **kwargs)


def _widened(value: Any) -> Any:
    if value is torch.float32:
        return torch.float64
    if isinstance(value, torch.Tensor) and value.dtype == torch.float32:
        return value.double()
    return value


def load_float64_reference(checkpoint: Path) -> Any:
    """transformers on ``checkpoint`` in its stored dtype, embedding and LM head wrapped to compute in
    float64; call :func:`widen` on a component before running it (module docstring)."""
    from transformers import Glm4vForConditionalGeneration

    from trt_pipeline.export.dtypes import checkpoint_dtype

    stored = getattr(torch, checkpoint_dtype(checkpoint))
    model = Glm4vForConditionalGeneration.from_pretrained(str(checkpoint), dtype=stored).eval()
    text = model.model.language_model
    text.embed_tokens = Float64Embedding(text.embed_tokens.weight.data)
    if model.lm_head.bias is not None:
        raise ValueError("Float64Head expects a bias-free LM head (GLM-4.1V has none)")
    model.lm_head = Float64Head(model.lm_head.weight.data)
    return model


def widen(model: Any, component: str) -> None:
    """Make ``component`` (``vision_encoder`` / ``decoder``) of a :func:`load_float64_reference` model
    compute in float64; for the decoder, free the vision tower first (it is not needed any more)."""
    if component == "vision_encoder":
        model.model.visual.to(torch.float64)
        return
    model.model.visual.to("meta")  # frees its storage; the text-only steps never call it
    text = model.model.language_model
    for module in (*text.layers, text.norm, text.rotary_emb):
        module.to(torch.float64)


__all__ = ["Float64Embedding", "Float64Head", "KeepFloat64", "load_float64_reference", "widen"]
