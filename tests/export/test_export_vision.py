"""The exported vision encoder: no n x n input, one image per call, equal to transformers for 1, 2 and 3
images of different grids on ONNX Runtime (features of a prompt's images = one call per image)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from trt_pipeline.accuracy.gates import DEFAULT_GATES
from trt_pipeline.accuracy.metrics import tensor_metrics

GRIDS = {
    "1-image": [[1, 4, 6]],
    "2-images": [[1, 8, 4], [1, 6, 10]],
    "3-images": [[1, 2, 2], [1, 10, 8], [1, 4, 14]],
}


class _CountingRunner:
    """Records the patch count of every call of a runner."""

    def __init__(self, runner) -> None:
        self.runner, self.patches = runner, []

    def get_input_metadata(self):
        return self.runner.get_input_metadata()

    def infer(self, feed):
        self.patches.append(feed["pixel_values"].shape[0])
        return self.runner.infer(feed)


@pytest.fixture(scope="module")
def vision_export(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from trt_pipeline.config import ExportConfig
    from trt_pipeline.export.exporter import export

    cfg = ExportConfig(components=("vision_encoder",), max_image_tokens=64, validate=False)
    return export(tiny_checkpoint, tmp_path_factory.mktemp("vision") / "out", cfg, show_progress=False)


def test_inputs_grow_linearly_with_patches(vision_export: Path) -> None:
    model = onnx.load(str(vision_export / "onnx" / "fp32" / "vision_encoder.onnx"), load_external_data=False)
    shapes = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in model.graph.input}
    assert set(shapes) == {"pixel_values", "rotary_cos", "rotary_sin", "position_embeddings"}
    for name, shape in shapes.items():
        assert shape[0] == "num_patches" and all(isinstance(d, int) for d in shape[1:]), (name, shape)
    assert {n.op_type for n in model.graph.node} >= {"MatMul", "Softmax"}


@pytest.mark.parametrize("images", sorted(GRIDS))
def test_ort_matches_transformers_for_several_images(vision_export: Path, tiny_checkpoint: Path, images: str) -> None:
    from transformers import Glm4vForConditionalGeneration

    from trt_pipeline.models.glm4v.generation import HostAssets, encode_images
    from trt_pipeline.models.glm4v.processing import MultimodalInputs
    from trt_pipeline.runtime.onnxruntime_runner import onnx_path, ort_runner

    reference = Glm4vForConditionalGeneration.from_pretrained(str(tiny_checkpoint), dtype=torch.float32).eval()
    assets = HostAssets.from_export_dir(vision_export)
    grid = torch.tensor(GRIDS[images])
    pixels = torch.randn(int(grid.prod(-1).sum()), assets.dims.vision.patch_dim, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = reference.model.get_image_features(pixels, grid, return_dict=True).pooler_output
    expected = torch.cat(list(expected)) if isinstance(expected, (list, tuple)) else expected
    none = torch.zeros(1, 1, dtype=torch.long)
    inputs = MultimodalInputs(none, none, none, pixels, grid)
    with ort_runner(onnx_path(vision_export, "fp32", "vision_encoder")) as runner:
        counting = _CountingRunner(runner)
        actual = encode_images(assets, counting, inputs)
    assert counting.patches == [t * h * w for t, h, w in GRIDS[images]]  # one call per image
    metrics = tensor_metrics(expected.numpy(), actual.numpy())
    gate = DEFAULT_GATES["fp32"].image_features
    assert metrics.max_abs <= gate.atol and metrics.cosine >= gate.cosine, metrics
