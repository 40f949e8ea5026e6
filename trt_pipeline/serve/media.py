"""Images of ``image_url`` parts: ``data:`` URLs decoded with PIL; files/http only when allowed.

The agent sends screenshots inline (``data:image/png;base64,...``). Reading local paths or fetching
URLs on behalf of a client would let anyone who reaches the port read the server's disk or probe
its network, so both are refused unless the URL starts with an ``--allowed-media-path`` prefix
(vLLM's ``--allowed-local-media-path`` plays the same role). The pixel limit is checked from the
header, before decoding, so an oversized or decompression-bomb image costs nothing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trt_pipeline.serve.errors import bad_request, too_large

FORMATS = {"png": "PNG", "jpeg": "JPEG", "jpg": "JPEG", "webp": "WEBP"}


@dataclass(frozen=True)
class DecodedImage:
    image: Any  # PIL.Image in RGB
    digest: str  # sha256 of the encoded bytes: the image's identity for prefix reuse


def _read_source(url: str, allowed: Sequence[str], param: str) -> bytes:
    """Bytes behind a data:, file path or http(s) URL (the latter two only under an allowed prefix)."""
    if url.startswith("data:"):
        header, sep, payload = url.partition(",")
        kind = header[5:].split(";")[0].lower()
        if not sep or not header.endswith(";base64") or kind.removeprefix("image/") not in FORMATS:
            raise bad_request(
                "image_url must be a base64 data URL of a PNG, JPEG or WebP image "
                "(data:image/png;base64,...).", param=param, code="invalid_image_url")
        try:
            return base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise bad_request("image_url holds invalid base64 data.", param=param, code="invalid_image") from None
    if not any(prefix and url.startswith(prefix) for prefix in allowed):
        raise bad_request(
            "only data: image URLs are accepted; file paths and http(s) URLs need the server to be "
            "started with a matching --allowed-media-path prefix.", param=param, code="media_not_allowed")
    if url.startswith(("http://", "https://")):
        import httpx

        try:
            response = httpx.get(url, timeout=10.0, follow_redirects=False)
            response.raise_for_status()
        except httpx.HTTPError as error:
            raise bad_request(f"cannot fetch {url}: {error}", param=param, code="invalid_image") from None
        return response.content
    path = Path(url.removeprefix("file://"))
    try:
        return path.read_bytes()
    except OSError as error:
        raise bad_request(f"cannot read {path}: {error.strerror}", param=param, code="invalid_image") from None


def _header(data: bytes, param: str) -> tuple[str, int, int]:
    """(format, width, height) from the image header alone; 400 when it is no PNG/JPEG/WebP."""
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                fmt, (width, height) = image.format, image.size
    except Exception as error:  # PIL raises UnidentifiedImageError, OSError, SyntaxError, DecompressionBombError
        raise bad_request(f"the image cannot be decoded ({type(error).__name__}).", param=param,
                          code="invalid_image") from None
    if fmt not in FORMATS.values():
        raise bad_request(f"unsupported image format {fmt}; send PNG, JPEG or WebP.", param=param, code="invalid_image")
    return fmt, width, height


def encode_data_url(image: Any, fmt: str = "PNG") -> str:
    """``data:image/...;base64,...`` of a PIL ``image``: what a client (the agent, a load test) sends."""
    buf = io.BytesIO()
    image.save(buf, fmt)
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buf.getvalue()).decode()


def decode_image(url: str, *, max_pixels: int, allowed: Sequence[str] = (), param: str = "messages") -> DecodedImage:
    """PIL RGB image of one ``image_url``; 400 when undecodable, 413 above ``max_pixels``."""
    from trt_pipeline.errors import PipelineError
    from trt_pipeline.models.glm4v.processing import decode_image as decode_rgb

    data = _read_source(url, allowed, param)
    _fmt, width, height = _header(data, param)
    if width * height > max_pixels:
        raise too_large(
            f"image of {width}x{height} = {width * height} pixels exceeds the limit of {max_pixels} "
            "pixels (--max-pixels); downscale it first.", param=param, code="image_too_large")
    try:
        rgb = decode_rgb(io.BytesIO(data), source="image_url")
    except PipelineError as error:
        raise bad_request(error.message, param=param, code="invalid_image") from None
    return DecodedImage(rgb, hashlib.sha256(data).hexdigest())
