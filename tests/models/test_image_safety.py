"""Images a user can hand us that must end in a typed error, not a traceback or an OOM.

A decompression bomb is refused from its header (before any pixel is decoded), an aspect ratio
the GLM-4.1V processor cannot resize is refused with the processor's limits in the message, and
garbage bytes are refused with the file named.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from trt_pipeline.errors import PipelineError
from trt_pipeline.models.glm4v.processing import MAX_DECODED_PIXELS, Glm4vProcessing


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose IHDR claims width x height, with a tiny (invalid) body: a bomb's header."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)))
    return path


@pytest.fixture(scope="module")
def processing(tiny_checkpoint: Path) -> Glm4vProcessing:
    return Glm4vProcessing(tiny_checkpoint)


@pytest.mark.parametrize("side", [10_000, 40_000])
def test_decompression_bomb_refused_from_header(processing: Glm4vProcessing, tmp_path: Path, side: int) -> None:
    path = png_header_only(tmp_path / "bomb.png", side, side)
    assert side * side > MAX_DECODED_PIXELS
    with pytest.raises(PipelineError) as info:
        processing.load_image(path)
    message = str(info.value)
    assert str(path) in message
    assert "pixel" in message and ("bomb" in message or "limit" in message)


@pytest.mark.parametrize("size", [(1, 400), (600, 2)])
def test_extreme_aspect_ratio_names_processor_limit(processing: Glm4vProcessing, tmp_path: Path, size) -> None:
    path = tmp_path / "strip.png"
    Image.new("RGB", size, (200, 10, 10)).save(path)
    with pytest.raises(PipelineError) as info:
        processing(["describe"], [[path]])
    message = str(info.value)
    assert "200" in message and "aspect ratio" in message
    assert "preprocessor_config.json" in message


def test_garbage_bytes_refused_with_file_named(processing: Glm4vProcessing, tmp_path: Path) -> None:
    path = tmp_path / "screen.png"
    path.write_bytes(b"not an image at all" * 10)
    with pytest.raises(PipelineError) as info:
        processing.load_image(path)
    assert str(path) in str(info.value) and "cannot be decoded" in str(info.value)


def test_normal_screenshot_still_decodes(processing: Glm4vProcessing, tmp_path: Path) -> None:
    path = tmp_path / "ok.png"
    Image.new("RGB", (108, 240), (1, 2, 3)).save(path)
    image = processing.load_image(path)
    assert image.size == (108, 240) and image.mode == "RGB"
