"""Host helpers against the transformers functions they mirror."""

from __future__ import annotations

import pytest
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


def test_packed_images_become_one_feed_per_image(tiny_checkpoint):
    """No [N, N] input: each image (each frame) is its own call, and its inputs are linear in its patches."""
    dims = load_dims(tiny_checkpoint)
    assert host.image_segments([[1, 2, 2], [2, 2, 4]]) == [(0, 4, (1, 2, 2)), (4, 12, (1, 2, 4)), (12, 20, (1, 2, 4))]
    table = torch.randn(dims.vision.position_grid**2, dims.vision.hidden_size)
    pixels = torch.randn(4 + 8, dims.vision.patch_dim)
    feeds = host.vision_feeds(dims.vision, table, pixels, [[1, 2, 2], [1, 2, 4]])
    assert [f["pixel_values"].shape[0] for f in feeds] == [4, 8]
    assert torch.equal(feeds[1]["pixel_values"], pixels[4:])
    for feed in feeds:
        n = feed["pixel_values"].shape[0]
        assert set(feed) == {"pixel_values", "rotary_cos", "rotary_sin", "position_embeddings"}
        assert all(value.shape[0] == n and value.dim() == 2 for value in feed.values())
    single = host.vision_inputs(dims.vision, table, [[1, 2, 4]])
    assert torch.equal(single["position_embeddings"], feeds[1]["position_embeddings"])
    with pytest.raises(ValueError, match="one image"):
        host.vision_inputs(dims.vision, table, [[1, 2, 2], [1, 2, 4]])
    with pytest.raises(ValueError, match="12 patches"):
        host.vision_feeds(dims.vision, table, pixels[:10], [[1, 2, 2], [1, 2, 4]])


@pytest.mark.parametrize("preset", ["tiny", "small", "phone-9b"])
def test_text_rope_table_rows_equal_text_rope_bitwise(preset):
    """A decode step looks its cos/sin up in the table: the rows must be what text_rope computes for
    that step, to the bit, whatever the batch size and position (torch's cos/sin are elementwise)."""
    from trt_pipeline.fixtures.presets import PRESETS
    from trt_pipeline.models.glm4v.config import TextDims

    text = PRESETS[preset].text
    dims = TextDims(vocab_size=8, hidden_size=text["hidden_size"], intermediate_size=8, num_hidden_layers=1,
                    num_attention_heads=text["num_attention_heads"], num_key_value_heads=1, rms_norm_eps=1e-5,
                    rope_theta=text["rope_theta"], partial_rotary_factor=text["partial_rotary_factor"],
                    mrope_section=tuple(text["mrope_section"]),
                    max_position_embeddings=text["max_position_embeddings"])
    length = 5000
    cos_table, sin_table = host.text_rope_table(dims, length)
    assert cos_table.shape == (length, dims.rotary_dim) and cos_table.dtype == torch.float32
    generator = torch.Generator().manual_seed(0)
    for batch in (1, 2, 3, 5):
        for _ in range(40):
            positions = torch.randint(0, length, (batch,), generator=generator)
            cos, sin = host.text_rope(dims, positions.view(1, batch, 1).expand(3, batch, 1))
            assert torch.equal(cos[:, 0], cos_table[positions]) and torch.equal(sin[:, 0], sin_table[positions])
    # a longer table (grown with headroom) starts with the shorter one
    longer_cos, _ = host.text_rope_table(dims, 2 * length + 7)
    assert torch.equal(longer_cos[:length], cos_table)
