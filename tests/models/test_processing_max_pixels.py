"""--max-pixels: one pixel limit (h x w) applied to the image processor every backend uses."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from trt_pipeline.errors import PipelineError
from trt_pipeline.models.glm4v.processing import Glm4vProcessing


def screenshot(path: Path, width: int = 1080, height: int = 2400) -> Path:
    image = Image.new("RGB", (width, height), (240, 240, 240))
    for row in range(0, height, 120):  # list rows, so resizing has something to move
        image.paste((30 + row % 200, 90, 160), (40, row + 20, width - 40, row + 90))
    image.save(path)
    return path


def test_phone_screenshot_unscaled_gives_3354_tokens(tiny_checkpoint: Path, tmp_path: Path) -> None:
    processing = Glm4vProcessing(tiny_checkpoint, max_pixels=1092 * 2408)
    inputs = processing(["tap the search box"], [[screenshot(tmp_path / "s.png")]])
    assert inputs.num_image_tokens == 3354
    assert inputs.image_grid_thw.tolist() == [[1, 172, 78]]  # 2408/14 x 1092/14 patches
    assert inputs.pixel_values.shape[0] == 13_416


def test_default_uses_the_processor_config(tiny_checkpoint: Path, tmp_path: Path) -> None:
    default = Glm4vProcessing(tiny_checkpoint)
    inputs = default(["x"], [[screenshot(tmp_path / "s.png")]])
    assert inputs.num_image_tokens <= 64  # the tiny preset's processor limit (256 patches)


@pytest.mark.parametrize("max_pixels", [200_000, 1_000_000])
def test_smaller_limits_downscale(tiny_checkpoint: Path, tmp_path: Path, max_pixels: int) -> None:
    inputs = Glm4vProcessing(tiny_checkpoint, max_pixels=max_pixels)(["x"], [[screenshot(tmp_path / "s.png")]])
    t, h, w = inputs.image_grid_thw[0].tolist()
    assert h * w * 14 * 14 <= max_pixels
    assert inputs.num_image_tokens == h * w // 4


def test_bad_limit_is_a_typed_error(tiny_checkpoint: Path) -> None:
    with pytest.raises(PipelineError, match="--max-pixels"):
        Glm4vProcessing(tiny_checkpoint, max_pixels=0)
