"""The transformers reference runners agree with the export-friendly torch runners on identical feeds
(driven by Polygraphy's Comparator, as ``autoglm-trt compare`` does), and refuse inconsistent feeds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trt_pipeline.compare.data import FeedLoader, Sample, corner_samples, decoder_feed, empty_past, vision_feed
from trt_pipeline.config import DimRange
from trt_pipeline.errors import AccuracyError, ShapeError


@pytest.fixture(scope="module")
def runners(tiny_checkpoint):
    from trt_pipeline.models.glm4v.generation import HostAssets
    from trt_pipeline.models.glm4v.model import Glm4vExportModel
    from trt_pipeline.runtime.torch_runner import torch_component_runners
    from trt_pipeline.runtime.transformers_runner import transformers_component_runners

    model = Glm4vExportModel.from_pretrained(tiny_checkpoint, dtype="float32")
    return HostAssets.from_model(model), transformers_component_runners(tiny_checkpoint), torch_component_runners(model)


def _compare(reference, candidate, loader, atol):
    from polygraphy.comparator import Comparator
    from polygraphy.comparator.compare import SimpleCompareFunc
    from polygraphy.logger import G_LOGGER

    with G_LOGGER.verbosity(G_LOGGER.CRITICAL):
        results = Comparator.run([reference, candidate], data_loader=loader)
        accuracy = Comparator.compare_accuracy(
            results, comparisons=[(1, 0)], compare_func=SimpleCompareFunc(check_error_stat="max", atol=atol, rtol=0.0))
    pair = (candidate.name, reference.name)
    worst = {name: max(it[name].max_absdiff for it in accuracy[0][pair]) for name in accuracy[0][pair][0]}
    return bool(accuracy), worst


def test_vision_runner_matches_torch_export(runners):
    assets, (ref_vision, _), (torch_vision, _) = runners
    generator = torch.Generator().manual_seed(0)
    samples = []
    for grids in ([[1, 4, 4]], [[1, 8, 6]], [[1, 6, 4]]):  # one image per feed (several images: several calls)
        grid = torch.tensor(grids)
        pixels = torch.randn(int(grid.prod(-1).sum()), assets.dims.vision.patch_dim, generator=generator)
        samples.append(Sample(str(grids), vision_feed(assets, pixels, grid)))
    passed, worst = _compare(ref_vision, torch_vision, FeedLoader("vision_encoder", samples), atol=1e-5)
    assert passed, worst
    assert set(worst) == {"image_features"}


def test_decoder_runner_matches_torch_export(runners):
    assets, (_, ref_decoder), (_, torch_decoder) = runners
    ranges = {
        "batch_size": DimRange(1, 1, 2),
        "sequence_length": DimRange(1, 8, 16),
        "past_sequence_length": DimRange(0, 8, 24),
    }
    with ref_decoder:
        samples = corner_samples(assets, ranges, ref_decoder, seed=1)
    # M-RoPE positions that are not the same on the three axes (as for image tokens).
    positions = torch.tensor([[[0, 1, 1, 1, 2]], [[0, 1, 1, 2, 3]], [[0, 1, 2, 1, 4]]])
    embeds = assets.embed_table[torch.tensor([[3, 5, 7, 11, 13]])].float()
    samples.append(Sample("mrope", decoder_feed(assets, embeds, torch.ones(1, 5, dtype=torch.long), positions,
                                                empty_past(assets, 1))))
    assert [s.label for s in samples][:2] == ["extreme/b1-s1-p0", "extreme/b1-s1-p24"]
    passed, worst = _compare(ref_decoder, torch_decoder, FeedLoader("decoder", samples), atol=1e-4)
    assert passed, worst
    layers = assets.dims.text.num_hidden_layers
    assert set(worst) == {"logits", *(f"present.{i}.{k}" for i in range(layers) for k in ("key", "value"))}
    assert max(worst.values()) < 1e-5


def test_reference_runner_refuses_inconsistent_feeds(runners):
    assets, (ref_vision, ref_decoder), _ = runners
    positions = torch.arange(4).view(1, 1, -1).expand(3, 1, -1)
    feed = decoder_feed(assets, assets.embed_table[torch.tensor([[1, 2, 3, 4]])].float(),
                        torch.ones(1, 4, dtype=torch.long), positions, empty_past(assets, 1))
    with ref_decoder:
        shifted = dict(feed, position_ids=np.ascontiguousarray(feed["position_ids"] + 1))
        with pytest.raises(AccuracyError, match="rope_cos"):
            ref_decoder.infer(shifted, check_inputs=False)
        with pytest.raises(ShapeError, match="position_ids"):
            ref_decoder.infer({k: v for k, v in feed.items() if k != "position_ids"}, check_inputs=False)
        meta = ref_decoder.get_input_metadata(use_numpy_dtypes=False)
        assert "position_ids" in meta and "past_key_values.0.key" in meta
    with ref_vision:
        assert list(ref_vision.get_input_metadata(use_numpy_dtypes=False)) == ["pixel_values", "image_grid_thw"]
