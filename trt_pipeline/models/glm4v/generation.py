"""Greedy generation that drives any pair of component runners with a KV cache.

The loop is backend-agnostic: the vision encoder and the decoder are Polygraphy ``BaseRunner``s
(torch, ONNX Runtime or TensorRT) fed numpy arrays by name; everything data-dependent happens
here on the host: embedding lookup, merging image features into placeholder positions, M-RoPE
positions, the growing attention mask, and the KV cache handed back from ``present.*`` to
``past_key_values.*``. It mirrors transformers' ``generate(do_sample=False)``: finished rows keep
receiving ``pad_token_id``, and generation stops when every row has produced an EOS token.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trt_pipeline.models.glm4v import host
from trt_pipeline.models.glm4v.config import Glm4vDims, load_dims
from trt_pipeline.models.glm4v.io_spec import past_names, present_names
from trt_pipeline.models.glm4v.processing import MultimodalInputs


@dataclass
class HostAssets:
    """What the host needs besides the runners: dims and the two tables looked up on the host."""

    dims: Glm4vDims
    embed_table: torch.Tensor  # [vocab, hidden]
    vision_position_table: torch.Tensor  # [grid*grid, vision_hidden]

    @classmethod
    def from_model(cls, model: Any) -> HostAssets:
        return cls(model.dims, model.embed_table.detach(), model.vision_position_table.detach())

    @classmethod
    def from_export_dir(cls, out_dir: Path | str) -> HostAssets:
        """Load the tables written by ``autoglm-trt export`` (``embeddings/*.safetensors``)."""
        from safetensors.torch import load_file

        out_dir = Path(out_dir)
        dims = load_dims(out_dir / "hf")
        embed = load_file(str(out_dir / "embeddings" / "embed_tokens.safetensors"))["weight"]
        table = load_file(str(out_dir / "embeddings" / "vision_pos_embed.safetensors"))["weight"]
        return cls(dims, embed, table)


@dataclass
class GenerationResult:
    tokens: torch.Tensor  # [B, new_tokens]
    step_logits: list[torch.Tensor] = field(default_factory=list)  # each [B, vocab] (last position)
    image_features: torch.Tensor | None = None

    def token_lists(self) -> list[list[int]]:
        return [row.tolist() for row in self.tokens]


def _np(t: torch.Tensor, dtype: Any = np.float32) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().numpy().astype(dtype, copy=False))


def _match_input_dtypes(runner: Any, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Cast float feeds to the runner's declared float input dtypes (e.g. fp16-I/O AutoCast graphs)."""
    import warnings

    with warnings.catch_warnings():  # Polygraphy deprecates numpy dtypes in ORT metadata; both handled below
        warnings.simplefilter("ignore", DeprecationWarning)
        meta = runner.get_input_metadata()
    out = {}
    for name, value in feed.items():
        if name in meta and np.issubdtype(value.dtype, np.floating):
            try:
                want = np.dtype(meta[name].dtype)
            except TypeError:  # Polygraphy DataType
                from polygraphy.datatype import DataType

                want = np.dtype(DataType.to_dtype(meta[name].dtype, "numpy"))
            if np.issubdtype(want, np.floating) and want != value.dtype:
                value = value.astype(want)
        out[name] = value
    return out


def encode_images(assets: HostAssets, vision_runner: Any, inputs: MultimodalInputs) -> torch.Tensor | None:
    """Run the vision runner once on all images of the batch (packed along the patch axis)."""
    if inputs.pixel_values is None:
        return None
    feeds = host.vision_inputs(assets.dims.vision, assets.vision_position_table.float(), inputs.image_grid_thw)
    feed = {"pixel_values": _np(inputs.pixel_values), **{k: _np(v) for k, v in feeds.items()}}
    out = vision_runner.infer(_match_input_dtypes(vision_runner, feed))
    return torch.from_numpy(np.asarray(out["image_features"], dtype=np.float32).copy())


def prefill_embeddings(
    assets: HostAssets, inputs: MultimodalInputs, image_features: torch.Tensor | None
) -> torch.Tensor:
    """Token embeddings with image features written into the placeholder positions (row-major)."""
    embeds = assets.embed_table[inputs.input_ids].float().clone()
    mask = inputs.mm_token_type_ids.bool()
    if image_features is not None:
        if int(mask.sum()) != image_features.shape[0]:
            raise ValueError(
                f"{int(mask.sum())} image placeholder tokens but {image_features.shape[0]} image features"
            )
        embeds[mask] = image_features.to(embeds.dtype)
    return embeds


def greedy_generate(
    assets: HostAssets,
    vision_runner: Any,
    decoder_runner: Any,
    inputs: MultimodalInputs,
    max_new_tokens: int,
    eos_token_ids: Sequence[int] = (),
    pad_token_id: int = 0,
    collect_logits: bool = False,
) -> GenerationResult:
    """Greedy decoding of ``max_new_tokens`` tokens (fewer if every row hits EOS)."""
    dims = assets.dims
    layers = dims.text.num_hidden_layers
    past_in, present_out = past_names(layers), present_names(layers)
    batch = inputs.input_ids.shape[0]
    with contextlib.ExitStack() as stack:
        for runner in (vision_runner, decoder_runner):
            if runner is not None and not runner.is_active:
                stack.enter_context(runner)
        image_features = encode_images(assets, vision_runner, inputs)
        embeds = prefill_embeddings(assets, inputs, image_features)
        positions, _ = host.rope_index(
            inputs.input_ids, inputs.mm_token_type_ids, inputs.image_grid_thw, inputs.attention_mask,
            dims.vision.spatial_merge_size,
        )
        next_position = positions.amax(dim=(0, 2)) + 1  # [B]
        attention_mask = inputs.attention_mask.clone()
        kv_shape = (batch, dims.text.num_key_value_heads, 0, dims.text.head_dim)
        past = {name: np.zeros(kv_shape, dtype=np.float32) for name in past_in}
        finished = torch.zeros(batch, dtype=torch.bool)
        eos = torch.tensor(list(eos_token_ids), dtype=torch.long)
        tokens: list[torch.Tensor] = []
        step_logits: list[torch.Tensor] = []
        for _step in range(max_new_tokens):
            cos, sin = host.text_rope(dims.text, positions)
            feed = {
                "inputs_embeds": _np(embeds),
                "attention_mask": _np(attention_mask, np.int64),
                "rope_cos": _np(cos),
                "rope_sin": _np(sin),
                **past,
            }
            out = decoder_runner.infer(_match_input_dtypes(decoder_runner, feed))
            logits = torch.from_numpy(np.asarray(out["logits"][:, -1, :], dtype=np.float32).copy())
            if collect_logits:
                step_logits.append(logits)
            token = logits.argmax(dim=-1)
            token = torch.where(finished, torch.full_like(token, pad_token_id), token)
            tokens.append(token)
            if len(eos):
                finished |= torch.isin(token, eos)
            if bool(finished.all()):
                break
            past = {name: np.asarray(out[src]) for name, src in zip(past_in, present_out)}
            embeds = assets.embed_table[token].float().unsqueeze(1)
            attention_mask = torch.cat([attention_mask, torch.ones(batch, 1, dtype=attention_mask.dtype)], dim=1)
            positions = next_position.view(1, batch, 1).expand(3, batch, 1)
            next_position = next_position + 1
    return GenerationResult(torch.stack(tokens, dim=1), step_logits, image_features)
