"""The export-friendly GLM-4.1V: loading from a HF checkpoint folder and the host-side glue.

:class:`Glm4vExportModel` owns the vision tower, the text model and the LM head with the same
parameter names as transformers' ``Glm4vForConditionalGeneration`` (minus the ``model.``
prefix), built on the ``meta`` device and filled with memory-mapped safetensors, so loading
holds one copy of the weights. Its :attr:`vision_encoder` and :attr:`decoder` are the two
modules that get exported; :meth:`embed` and :meth:`vision_host_inputs` are what the host does
around them.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from trt_pipeline.models.glm4v import host
from trt_pipeline.models.glm4v.config import Glm4vDims, load_dims
from trt_pipeline.models.glm4v.text import TextDecoder, TextModel
from trt_pipeline.models.glm4v.vision import VisionEncoder
from trt_pipeline.models.glm4v.weights import check_expected, load_tensors, parse_dtype, scan_checkpoint


class Glm4vExportModel(nn.Module):
    """GLM-4.1V split into an exportable vision encoder and decoder plus host helpers."""

    def __init__(self, dims: Glm4vDims) -> None:
        super().__init__()
        self.dims = dims
        self.visual = VisionEncoder(dims.vision)
        self.language_model = TextModel(dims.text)
        self.lm_head = nn.Linear(dims.text.hidden_size, dims.text.vocab_size, bias=False)
        self.decoder = TextDecoder(dims.text, self.language_model, self.lm_head)

    # -- loading ---------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, checkpoint: Path | str, dtype: str | torch.dtype | None = None) -> Glm4vExportModel:
        """Load a Glm4v checkpoint folder (single or sharded safetensors; bf16/fp16/fp32).

        ``dtype=None`` keeps the checkpoint's dtype (no copy); otherwise tensors are converted one
        at a time. Raises CheckpointError for a missing, truncated or mis-shaped tensor and for a
        config of another architecture.
        """
        checkpoint = Path(checkpoint)
        dims = load_dims(checkpoint)
        target = parse_dtype(dtype)
        with torch.device("meta"):
            model = cls(dims)
        expected = {name: tuple(p.shape) for name, p in model.named_parameters()}
        entries = scan_checkpoint(checkpoint)
        optional = {"lm_head.weight"} if dims.tie_word_embeddings else set()
        check_expected(entries, expected, checkpoint, optional=optional)
        for name, tensor in load_tensors(entries, expected.keys() & entries.keys(), target):
            model._assign(name, tensor)
        if "lm_head.weight" not in entries:
            model.lm_head.weight = model.language_model.embed_tokens.weight
        model.eval()
        return model

    def _assign(self, name: str, tensor: torch.Tensor) -> None:
        module_path, _, leaf = name.rpartition(".")
        module = self.get_submodule(module_path)
        setattr(module, leaf, nn.Parameter(tensor, requires_grad=False))

    # -- components ------------------------------------------------------------------------
    @property
    def vision_encoder(self) -> VisionEncoder:
        return self.visual

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.weight.dtype

    @property
    def embed_table(self) -> torch.Tensor:
        return self.language_model.embed_tokens.weight

    @property
    def vision_position_table(self) -> torch.Tensor:
        return self.visual.embeddings.position_embedding.weight

    # -- host helpers ----------------------------------------------------------------------
    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embed_table[input_ids]

    def vision_host_inputs(self, grid_thw: host.GridTHW) -> dict[str, torch.Tensor]:
        """Host inputs of one image (``grid_thw`` = [[1, h, w]])."""
        return host.vision_inputs(self.dims.vision, self.vision_position_table, grid_thw)

    @torch.no_grad()
    def encode_images(self, pixel_values: torch.Tensor, grid_thw: host.GridTHW) -> torch.Tensor:
        """Run the vision encoder in torch on packed patches of several images, one call per image."""
        feeds = host.vision_feeds(self.dims.vision, self.vision_position_table, pixel_values, grid_thw)
        return torch.cat([self.visual(**{k: v.to(self.dtype) for k, v in feed.items()}) for feed in feeds])

    def empty_past(self, batch: int, dtype: torch.dtype | None = None) -> list[torch.Tensor]:
        """Zero-length past keys/values [B, kv_heads, 0, head_dim] for every layer (prefill)."""
        text = self.dims.text
        shape = (batch, text.num_key_value_heads, 0, text.head_dim)
        return [torch.zeros(shape, dtype=dtype or self.dtype) for _ in range(2 * text.num_hidden_layers)]
