"""Workload -> dims: the phone-agent numbers of ARCHITECTURE.md, tiny's old ranges, provenance."""

from __future__ import annotations

import pytest
from transformers.models.glm4v.image_processing_pil_glm4v import smart_resize

from trt_pipeline.errors import ConfigError
from trt_pipeline.export.workloads import (
    PHONE_AGENT,
    TINY,
    default_workload,
    get_workload,
    image_token_bounds,
    processor_longest_edge,
    resolve_workload,
)

PATCH, MERGE, TEMPORAL = 14, 2, 2


def tokens_of(height: int, width: int, max_pixels: int) -> int:
    """Image tokens transformers' processor makes of one image under ``max_pixels`` (h x w)."""
    h, w = smart_resize(
        num_frames=TEMPORAL, height=height, width=width, factor=PATCH * MERGE, temporal_factor=TEMPORAL,
        min_pixels=112 * 112, max_pixels=processor_longest_edge(max_pixels, TEMPORAL),
    )
    return (h // PATCH) * (w // PATCH) // MERGE**2


def test_phone_screenshot_is_3354_tokens_under_the_agent_limit() -> None:
    assert tokens_of(2400, 1080, PHONE_AGENT.max_pixels) == 3354


@pytest.mark.parametrize("size", [(2400, 1080), (2560, 1440), (3200, 1440), (1920, 1080), (4000, 3000)])
def test_token_bound_covers_every_image_the_processor_makes(size: tuple[int, int]) -> None:
    longest = processor_longest_edge(PHONE_AGENT.max_pixels, TEMPORAL)
    _, most = image_token_bounds(112 * 112, longest, TEMPORAL, MERGE, PATCH)
    assert tokens_of(*size, PHONE_AGENT.max_pixels) <= most
    assert most == 5_000_000 // 784


def test_phone_agent_dims_fit_one_real_step() -> None:
    resolved = resolve_workload(PHONE_AGENT, image_tokens=(16, 6377), image_tokens_source="workload --max-pixels")
    dims = resolved.dims
    assert dims["past_sequence_length"][2] + 1 == 25_480
    assert dims["sequence_length"][2] >= 4_608  # a 4-5k first prefill in one chunk
    assert dims["num_image_tokens"] == (16, (16 + 6377) // 2, 6377)
    assert resolved.profile_opts["append"]["sequence_length"] == 3584
    assert resolved.profile_opts["append"]["past_sequence_length"] >= 1
    assert set(resolved.sources) == {"batch_size", "sequence_length", "past_sequence_length", "num_image_tokens"}
    assert resolved.sources["sequence_length"] == "workload --max-seq"


def test_tiny_keeps_the_old_default_ranges() -> None:
    dims = resolve_workload(TINY, image_tokens=(4, 64), image_tokens_source="processor").dims
    assert dims["batch_size"] == (1, 1, 4)
    assert dims["sequence_length"] == (1, 128, 256)
    assert dims["past_sequence_length"] == (0, 256, 512)
    assert dims["num_image_tokens"] == (4, 34, 64)


def test_flags_override_and_are_recorded() -> None:
    resolved = resolve_workload(
        PHONE_AGENT, image_tokens=(16, 6377), image_tokens_source="processor",
        overrides={"max_seq": 2048, "max_kv": 4096, "max_image_tokens": 3354, "max_batch": None},
    )
    assert resolved.dims["sequence_length"][2] == 2048 and resolved.sources["sequence_length"] == "flag --max-seq"
    assert resolved.dims["past_sequence_length"][2] == 4096
    assert resolved.dims["num_image_tokens"][2] == 3354
    assert resolved.sources["batch_size"] == "workload --max-batch"
    assert resolved.profile_opts["decode"]["past_sequence_length"] <= 4096


def test_bad_names_and_values_are_typed_errors() -> None:
    with pytest.raises(ConfigError, match="phone-agent"):
        get_workload("phone")
    with pytest.raises(ConfigError, match="--max-seq"):
        resolve_workload(TINY, image_tokens=(4, 64), image_tokens_source="p", overrides={"max_seq": 0})
    with pytest.raises(ConfigError, match="image tokens"):
        resolve_workload(TINY, image_tokens=(4, 64), image_tokens_source="p", overrides={"min_image_tokens": 100})


def test_default_workload_follows_model_width() -> None:
    assert default_workload(4096) is PHONE_AGENT
    assert default_workload(128) is TINY
