"""Host-side computations that depend on data: rotary tables, resampled position embeddings,
the split of packed images into one vision-encoder feed per image, and M-RoPE position ids.

These are the parts of transformers' GLM-4.1V forward pass that use ``.tolist()``, Python loops
over images or ``itertools.groupby``; computing them on the host (as TensorRT Edge-LLM and
onnxruntime-genai do) keeps the exported graphs static apart from their dynamic axes. Each
function mirrors a transformers function named in its docstring and is tested against it.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from trt_pipeline.models.glm4v.config import TextDims, VisionDims

GridTHW = Sequence[Sequence[int]] | torch.Tensor


def _grids(grid_thw: GridTHW) -> list[tuple[int, int, int]]:
    rows = grid_thw.tolist() if isinstance(grid_thw, torch.Tensor) else grid_thw
    return [(int(t), int(h), int(w)) for t, h, w in rows]


def vision_position_ids(grid_thw: GridTHW, merge: int) -> torch.Tensor:
    """(h, w) of every patch, block-major over merge x merge blocks: [N, 2].

    Mirrors ``transformers.vision_utils.get_vision_position_ids`` (include_temporal=False).
    """
    out = []
    for t, h, w in _grids(grid_thw):
        hpos, wpos = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        shape = (h // merge, merge, w // merge, merge)
        hpos = hpos.reshape(shape).transpose(1, 2).flatten()
        wpos = wpos.reshape(shape).transpose(1, 2).flatten()
        out.append(torch.stack([hpos, wpos], dim=-1).repeat(t, 1))
    return torch.cat(out, dim=0)


def vision_rotary(dims: VisionDims, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """2-D axial rotary cos/sin [N, head_dim] (``Glm4vVisionRotaryEmbedding``)."""
    spatial_dim = dims.head_dim // 2
    inv_freq = 1.0 / (dims.rope_theta ** (torch.arange(0, spatial_dim, 2, dtype=torch.float) / spatial_dim))
    freqs = position_ids[..., None].float() * inv_freq  # [N, 2, head_dim/4]
    def recompose(f: torch.Tensor) -> torch.Tensor:
        hw = torch.cat([f[:, 0], f[:, 1]], dim=-1)
        return torch.cat([hw, hw], dim=-1)
    return recompose(freqs.cos()), recompose(freqs.sin())


def vision_position_embeddings(
    table: torch.Tensor, grid_thw: GridTHW, position_ids: torch.Tensor
) -> torch.Tensor:
    """Learned position table bicubically resampled to each image's patch grid: [N, hidden].

    Mirrors ``Glm4vVisionEmbeddings.forward`` (grid_sample, bicubic, align_corners=False,
    border padding), computed in fp32 and returned in the table's dtype.
    """
    side = int(table.shape[0] ** 0.5)
    hidden = table.shape[1]
    grid_2d = table.view(side, side, hidden).permute(2, 0, 1).unsqueeze(0).float()
    target_h = torch.cat([torch.full((t * h * w,), float(h)) for t, h, w in _grids(grid_thw)])
    target_w = torch.cat([torch.full((t * h * w,), float(w)) for t, h, w in _grids(grid_thw)])
    h_coords, w_coords = position_ids[:, 0].float(), position_ids[:, 1].float()
    norm_w = ((w_coords + 0.5) / target_w) * 2 - 1
    norm_h = ((h_coords + 0.5) / target_h) * 2 - 1
    grid = torch.stack((norm_w, norm_h), dim=-1).unsqueeze(0).unsqueeze(2)
    sampled = F.grid_sample(grid_2d, grid, mode="bicubic", align_corners=False, padding_mode="border")
    return sampled.squeeze(0).squeeze(-1).permute(1, 0).to(table.dtype)


def image_segments(grid_thw: GridTHW) -> list[tuple[int, int, tuple[int, int, int]]]:
    """``(start, stop, (1, h, w))`` patch span of every attention segment of packed patches.

    A segment is one frame of one image: transformers' ``cu_seqlens`` (per image, repeated over
    its ``t`` frames) -- the unit the vision encoder attends within, so the unit of one call.
    """
    segments, start = [], 0
    for t, h, w in _grids(grid_thw):
        for _ in range(t):
            segments.append((start, start + h * w, (1, h, w)))
            start += h * w
    return segments


def vision_inputs(dims: VisionDims, table: torch.Tensor, grid_thw: GridTHW) -> dict[str, torch.Tensor]:
    """Host-computed vision-encoder inputs except ``pixel_values``, for ONE image (one segment).

    The encoder attends over every patch of a call (no mask input), so packing two images into
    one call would let them attend to each other: use :func:`vision_feeds` for several images.
    """
    grids = _grids(grid_thw)
    if len(grids) != 1 or grids[0][0] != 1:
        raise ValueError(f"vision_inputs takes one image (grid [[1, h, w]]), got {grids}; "
                         "split packed images with vision_feeds (one encoder call per image)")
    position_ids = vision_position_ids(grids, dims.spatial_merge_size)
    cos, sin = vision_rotary(dims, position_ids)
    return {
        "rotary_cos": cos,
        "rotary_sin": sin,
        "position_embeddings": vision_position_embeddings(table, grids, position_ids).float(),
    }


def vision_feeds(
    dims: VisionDims, table: torch.Tensor, pixel_values: torch.Tensor, grid_thw: GridTHW
) -> list[dict[str, torch.Tensor]]:
    """One complete vision-encoder feed per image of packed ``pixel_values`` [sum N_i, patch_dim].

    Run the encoder on each and concatenate the ``image_features`` in order: that equals
    transformers' packed ``get_image_features`` (per-image attention), with every input linear in
    the image's patches.
    """
    segments = image_segments(grid_thw)
    if segments and segments[-1][1] != pixel_values.shape[0]:
        raise ValueError(f"grid {_grids(grid_thw)} has {segments[-1][1]} patches but pixel_values has "
                         f"{pixel_values.shape[0]} rows")
    return [{"pixel_values": pixel_values[start:stop], **vision_inputs(dims, table, [grid])}
            for start, stop, grid in segments]


def rope_index(
    input_ids: torch.Tensor,
    mm_token_type_ids: torch.Tensor,
    image_grid_thw: GridTHW | None,
    attention_mask: torch.Tensor | None,
    spatial_merge_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """M-RoPE position ids [3, B, S] and per-row deltas [B] (``Glm4vModel.get_rope_index``, images only).

    Text runs advance all three axes together; an image run of grid (t, h, w) gets
    (t, h/m, w/m) coordinates offset by the current position, and the position then advances by
    max(h, w)/m. Padding positions (attention_mask == 0) are 0. The delta is
    ``max position + 1 - valid length``: decode positions are ``valid index + delta``.
    """
    grids = iter(_grids(image_grid_thw) if image_grid_thw is not None else [])
    batch, seq = input_ids.shape
    positions = torch.zeros(3, batch, seq, dtype=torch.long)
    deltas = []
    for row in range(batch):
        valid = attention_mask[row].bool() if attention_mask is not None else torch.ones(seq, dtype=torch.bool)
        types = mm_token_type_ids[row][valid].tolist()
        current, parts = 0, []
        for modality, group in itertools.groupby(types):
            length = len(list(group))
            if modality == 0:
                parts.append(torch.arange(length).view(1, -1).expand(3, -1) + current)
                current += length
                continue
            t, h, w = next(grids)
            gh, gw = h // spatial_merge_size, w // spatial_merge_size
            tt, hh, ww = torch.meshgrid(torch.arange(t), torch.arange(gh), torch.arange(gw), indexing="ij")
            block = torch.stack([tt, hh, ww]).reshape(3, -1) + current
            if block.shape[1] != length:
                raise ValueError(
                    f"row {row}: an image run has {length} placeholder tokens but its grid {t}x{h}x{w} "
                    f"needs {block.shape[1]}"
                )
            parts.append(block)
            current += max(h, w) // spatial_merge_size
        row_positions = torch.cat(parts, dim=1)
        positions[:, row, valid] = row_positions
        deltas.append(int(row_positions.max()) + 1 - int(valid.sum()))
    return positions, torch.tensor(deltas, dtype=torch.long)


@functools.lru_cache(maxsize=8)
def inverse_frequencies(dim: int, theta: float) -> torch.Tensor:
    """``1 / theta^(2i / dim)``, made once per (dim, theta): a decode step calls :func:`text_rope` for one
    token, where rebuilding this table was a third of the function's time. Read-only (shared)."""
    return 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))


def text_rope(dims: TextDims, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """M-RoPE cos/sin [B, S, rotary_dim] from position ids [3, B, S] (``Glm4vTextRotaryEmbedding``).

    Frequency band ``i`` of the rotary half is taken from axis ``i % 3`` of its mrope section,
    then each frequency is repeated twice for the interleaved rotation.
    """
    freqs = position_ids[..., None].float() * inverse_frequencies(dims.rotary_dim, dims.rope_theta)  # [3, B, S, dim/2]
    def recompose(f: torch.Tensor) -> torch.Tensor:
        chunks = f.split(list(dims.mrope_section), dim=-1)
        merged = torch.cat([chunk[i % 3] for i, chunk in enumerate(chunks)], dim=-1)
        return merged.repeat_interleave(2, dim=-1)
    return recompose(freqs.cos()), recompose(freqs.sin())


def text_rope_table(dims: TextDims, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """M-RoPE cos/sin ``[length, rotary_dim]`` of text positions ``0 .. length - 1`` (all three axes equal).

    A text or decode token has the same position on every M-RoPE axis, so its cos/sin are the rows
    of this table at its position: a decode step looks them up instead of calling
    :func:`text_rope` each step. The table IS :func:`text_rope` on those positions (torch's cos/sin
    are elementwise, so a row does not depend on the other rows computed with it), and
    ``tests/models/test_glm4v_host.py`` asserts that its rows are bitwise equal to per-step
    :func:`text_rope` calls for batches of several sizes.
    """
    positions = torch.arange(length).view(1, 1, length).expand(3, 1, length)
    cos, sin = text_rope(dims, positions)
    return cos[0], sin[0]
