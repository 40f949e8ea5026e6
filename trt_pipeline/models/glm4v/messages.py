"""OpenAI-style chat messages -> the chat template's messages and the images they carry.

The phone agent (and any ``openai`` client) sends ``{"role", "content"}`` messages whose content is
a string or a list of parts: ``{"type": "text", "text": ...}`` and
``{"type": "image_url", "image_url": {"url": ...}}``. An image URL may be a ``data:`` URL
(``data:image/png;base64,...``), a ``file://`` URL or a plain local path (relative paths are read
from the conversation file's folder). GLM-4.1V's chat template wants ``{"type": "image"}`` parts
instead, with the images passed to the image processor in the same order.

Each image also gets a key (sha256 of its encoded bytes): the cache replay uses it to tell two
images apart whose placeholder tokens are identical.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from trt_pipeline.errors import ConfigError

ROLES = ("system", "user", "assistant")


@dataclass
class Conversation:
    """Chat-template messages and their images (in order of appearance)."""

    messages: list[dict[str, Any]]
    images: list[Any] = field(default_factory=list)  # PIL images (RGB)
    image_keys: list[str] = field(default_factory=list)
    image_counts: list[int] = field(default_factory=list)  # images carried by each message

    def user_turns(self) -> list[int]:
        """Indices of the user messages (a reply is generated after each)."""
        return [i for i, m in enumerate(self.messages) if m["role"] == "user"]

    def prefix(self, end: int) -> Conversation:
        """The first ``end`` messages and the images they carry."""
        count = sum(self.image_counts[:end])
        return Conversation(self.messages[:end], self.images[:count], self.image_keys[:count], self.image_counts[:end])


def load_conversation(path: Path | str) -> Conversation:
    """Read a JSON file holding a list of messages or ``{"messages": [...]}``."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"conversation file {path} not found.", path=path) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"{path} is not a JSON conversation: {error}.", path=path,
                          hint='write a list of {"role", "content"} messages (OpenAI chat format).') from None
    messages = data.get("messages") if isinstance(data, dict) else data
    return parse_messages(messages, source=path)


def parse_messages(messages: Any, source: Path | None = None) -> Conversation:
    """Validate OpenAI-style messages and convert them; bad input raises ConfigError naming the message."""
    if not isinstance(messages, list) or not messages:
        raise ConfigError(f"{source or 'the conversation'} holds no list of messages.", path=source,
                          hint='write [{"role": "user", "content": "..."}, ...].')
    out = Conversation([])
    for index, message in enumerate(messages):
        where = f"{source or 'conversation'} message {index}"
        if not isinstance(message, Mapping) or message.get("role") not in ROLES:
            raise ConfigError(f"{where}: expected an object with role one of {', '.join(ROLES)}, got {message!r:.120}.",
                              path=source)
        content, images, keys = _content(message.get("content"), where, source)
        out.messages.append({"role": message["role"], "content": content})
        out.images += images
        out.image_keys += keys
        out.image_counts.append(len(images))
    return out


def _content(content: Any, where: str, source: Path | None) -> tuple[Any, list[Any], list[str]]:
    if isinstance(content, str):
        return content, [], []
    if not isinstance(content, Sequence):
        raise ConfigError(f"{where}: content must be a string or a list of parts.", path=source)
    parts: list[dict[str, str]] = []
    images, keys = [], []
    for part in content:
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind == "text" and isinstance(part.get("text"), str):
            parts.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            url = part.get("image_url")
            url = url.get("url") if isinstance(url, Mapping) else url
            image, key = load_image_url(str(url), where, source)
            parts.append({"type": "image"})
            images.append(image)
            keys.append(key)
        else:
            raise ConfigError(f"{where}: unsupported content part {part!r:.120}.", path=source,
                              hint='use {"type": "text", "text": ...} or {"type": "image_url", "image_url": {"url": ...}}.')
    return parts, images, keys


def load_image_url(url: str, where: str = "message", source: Path | None = None) -> tuple[Any, str]:
    """A ``data:`` URL, ``file://`` URL or local path -> (RGB PIL image, sha256 of its bytes)."""
    if url.startswith("data:"):
        header, _, payload = url.partition(",")
        try:
            raw = base64.b64decode(payload, validate=True) if header.endswith(";base64") else unquote(payload).encode()
        except (binascii.Error, ValueError):
            raise ConfigError(f"{where}: the data: URL is not valid base64.", path=source) from None
        label = "a data: URL"
    else:
        path = Path(unquote(urlparse(url).path)) if url.startswith("file://") else Path(url)
        if not path.is_absolute() and source is not None:
            path = source.parent / path
        try:
            raw = path.read_bytes()
        except OSError:
            raise ConfigError(f"{where}: image {path} not found.", path=source,
                              hint="image URLs may be data: URLs, file:// URLs or paths relative to the conversation file.") from None
        label = str(path)
    return _decode(raw, label, where, source), hashlib.sha256(raw).hexdigest()


def _decode(raw: bytes, label: str, where: str, source: Path | None) -> Any:
    """RGB image with the processing module's decompression-bomb guard."""
    from trt_pipeline.models.glm4v.processing import decode_image

    return decode_image(io.BytesIO(raw), source=f"{label} ({where})", path=source)


__all__ = ["Conversation", "load_conversation", "load_image_url", "parse_messages"]
