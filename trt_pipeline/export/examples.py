"""Example inputs used to trace each component for export.

Sizes are chosen so that no two dynamic axes share a value and none is 0 or 1: torch.export
specialises 0/1 sizes and may assume that equal sizes are the same symbol ("duck sizing").
"""

from __future__ import annotations

import torch

from trt_pipeline.models.glm4v.host import vision_inputs
from trt_pipeline.models.glm4v.io_spec import KvLayout
from trt_pipeline.models.glm4v.model import Glm4vExportModel

EXAMPLE_GRID = [[1, 4, 6]]  # one image (the encoder takes one per call): 24 patches -> 6 image tokens
EXAMPLE_BATCH, EXAMPLE_SEQ, EXAMPLE_PAST = 3, 7, 5
EXAMPLE_NUM_LOGITS = 2  # the last two positions of the chunk (a size no other axis has)


def vision_example(model: Glm4vExportModel) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(0)
    patches = sum(t * h * w for t, h, w in EXAMPLE_GRID)
    pixel_values = torch.randn(patches, model.dims.vision.patch_dim, generator=generator)
    # a zero position table: tracing needs shapes only, so this works for a model on `meta` too
    table = torch.zeros(model.vision_position_table.shape)
    host = vision_inputs(model.dims.vision, table, EXAMPLE_GRID)
    # host tables stay float32 whatever the model dtype (the graph casts, as transformers does)
    return (
        pixel_values.float(),
        host["rotary_cos"].float(),
        host["rotary_sin"].float(),
        host["position_embeddings"].float(),
    )


def decoder_example(model: Glm4vExportModel) -> tuple[torch.Tensor, ...]:
    text = model.dims.text
    b, s, p = EXAMPLE_BATCH, EXAMPLE_SEQ, EXAMPLE_PAST
    generator = torch.Generator().manual_seed(0)
    dtype = model.dtype
    embeds = torch.randn(b, s, text.hidden_size, generator=generator).to(dtype)
    mask = torch.ones(b, p + s, dtype=torch.long)
    cos = torch.randn(b, s, text.rotary_dim, generator=generator)
    sin = torch.randn(b, s, text.rotary_dim, generator=generator)
    positions = torch.arange(s - EXAMPLE_NUM_LOGITS, s, dtype=torch.long)
    layout = KvLayout.of(model.dims, model.decoder.kv_cache)
    rows = p + s if layout.inplace else p  # an inplace cache input spans the new positions too
    past = [torch.randn(layout.shape(b, rows), generator=generator).to(dtype) for _ in range(2 * text.num_hidden_layers)]
    return (embeds, mask, cos, sin, positions, *past)


#: Index of the first past key/value among the decoder's positional inputs (they are variadic).
DECODER_FIRST_PAST = 5
