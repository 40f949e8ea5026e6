"""Host helpers against the transformers functions they mirror."""

from __future__ import annotations

import torch

from trt_pipeline.models.glm4v import host
from trt_pipeline.models.glm4v.config import load_dims


def test_vision_position_ids_match_transformers():
    from transformers.vision_utils import get_vision_position_ids

    grid = torch.tensor([[1, 4, 6], [1, 8, 2]])
    ours = host.vision_position_ids(grid, 2)
    theirs = get_vision_position_ids(grid, 2)
    assert torch.equal(ours, theirs)


def test_rope_index_matches_transformers(tiny_checkpoint):
    from transformers import Glm4vForConditionalGeneration

    model = Glm4vForConditionalGeneration.from_pretrained(str(tiny_checkpoint))
    dims = load_dims(tiny_checkpoint)
    image = dims.image_token_id
    grid = torch.tensor([[1, 4, 6], [1, 2, 4]])
    row = [1, 2, 3] + [image] * 6 + [4, 5] + [image] * 2 + [6]
    ids = torch.tensor([[0, 0] + row, [0] * 2 + row])
    mask = torch.ones_like(ids)
    mask[0, :2] = 0
    mm = ((ids == image) & mask.bool()).long()
    grid2 = torch.cat([grid, grid])
    ours, deltas = host.rope_index(ids, mm, grid2, mask, 2)
    theirs, their_deltas = model.model.get_rope_index(ids, mm, image_grid_thw=grid2, attention_mask=mask)
    assert torch.equal(ours, theirs)
    assert torch.equal(deltas, their_deltas.view(-1))


def test_text_rope_matches_transformers(tiny_checkpoint):
    from transformers import Glm4vForConditionalGeneration

    model = Glm4vForConditionalGeneration.from_pretrained(str(tiny_checkpoint))
    dims = load_dims(tiny_checkpoint)
    positions = torch.randint(0, 500, (3, 2, 9))
    cos, sin = host.text_rope(dims.text, positions)
    their_cos, their_sin = model.model.language_model.rotary_emb(torch.zeros(1, dtype=torch.float32), positions)
    assert torch.allclose(cos, their_cos, atol=1e-6) and torch.allclose(sin, their_sin, atol=1e-6)


def test_attention_bias_blocks_images():
    bias = host.vision_attention_bias([[1, 2, 2], [1, 2, 4]])
    assert bias.shape == (12, 12)
    assert (bias[:4, :4] == 0).all() and (bias[4:, 4:] == 0).all()
    assert (bias[:4, 4:] < -1e30).all() and (bias[4:, :4] < -1e30).all()
