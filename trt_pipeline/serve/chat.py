"""OpenAI messages -> model inputs: chat template, images, token ids and the prefix-reuse identity.

The conversation is rendered with the checkpoint's own chat template (``chat_template_kwargs`` and
``enable_thinking`` reach it), image parts become ``{"type": "image"}`` items in place, and
:meth:`~trt_pipeline.models.glm4v.processing.Glm4vProcessing.encode_messages` expands placeholders
exactly as ``generate`` does, so a single-turn request tokenizes identically to ``autoglm-trt generate``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from trt_pipeline.errors import PipelineError
from trt_pipeline.serve.errors import bad_request
from trt_pipeline.serve.media import DecodedImage, decode_image
from trt_pipeline.serve.protocol import ChatCompletionRequest, ImagePart, TextPart


@dataclass(frozen=True)
class MediaPolicy:
    max_pixels: int = 5_000_000  # the Open-AutoGLM server's documented limit
    max_images: int = 10
    allowed_prefixes: tuple[str, ...] = ()


@dataclass
class Prompt:
    """One request's model inputs (batch of one)."""

    token_ids: list[int]
    key: list[int]  # identity per position: token id, or a digest of the image for placeholders
    image_runs: list[tuple[int, int]]  # [start, end) placeholder positions per image, in order
    pixel_values: torch.Tensor | None
    image_grid_thw: torch.Tensor | None
    positions: torch.Tensor  # M-RoPE ids [3, S]
    next_position: int


def template_messages(request: ChatCompletionRequest, policy: MediaPolicy) -> tuple[list[dict[str, Any]], list[DecodedImage]]:
    """Messages for ``apply_chat_template`` and the decoded images in the order they appear."""
    messages, images = [], []
    for index, message in enumerate(request.messages):
        if message.role != "user" or isinstance(message.content, str) or message.content is None:
            messages.append({"role": message.role, "content": "\n".join(message.text_parts())})
            continue
        content: list[dict[str, str]] = []
        for part in message.content:
            if isinstance(part, TextPart):
                content.append({"type": "text", "text": part.text})
            elif isinstance(part, ImagePart):
                param = f"messages[{index}].content"
                images.append(decode_image(part.image_url.url, max_pixels=policy.max_pixels,
                                           allowed=policy.allowed_prefixes, param=param))
                content.append({"type": "image"})
        messages.append({"role": "user", "content": content})
    if len(images) > policy.max_images:
        raise bad_request(f"{len(images)} images in one request; at most {policy.max_images} are accepted.",
                          param="messages", code="too_many_images")
    return messages, images


def _image_runs(mm_token_type_ids: Sequence[int]) -> list[tuple[int, int]]:
    runs, cursor = [], 0
    for is_image, group in itertools.groupby(mm_token_type_ids):
        length = len(list(group))
        if is_image:
            runs.append((cursor, cursor + length))
        cursor += length
    return runs


def _identity(token_ids: list[int], runs: list[tuple[int, int]], images: list[DecodedImage]) -> list[int]:
    key = list(token_ids)
    for (start, end), image in zip(runs, images):
        marker = -1 - int(image.digest[:15], 16)  # negative: never equal to a token id
        key[start:end] = [marker] * (end - start)
    return key


def build_prompt(processing: Any, request: ChatCompletionRequest, policy: MediaPolicy) -> Prompt:
    """Render, tokenize and position one request (no model call)."""
    from trt_pipeline.models.glm4v import host

    messages, images = template_messages(request, policy)
    from jinja2 import TemplateError

    try:
        inputs = processing.encode_messages(messages, [image.image for image in images], request.template_kwargs())
    except PipelineError as error:  # the image processor refuses e.g. extreme aspect ratios
        raise bad_request(f"the image cannot be processed: {error.message}", param="messages",
                          code="invalid_image") from None
    except TemplateError as error:  # the client's chat_template_kwargs broke the template
        raise bad_request(f"the chat template failed: {error}", param="chat_template_kwargs") from None
    ids = inputs.input_ids[0].tolist()
    runs = _image_runs(inputs.mm_token_type_ids[0].tolist())
    positions, _ = host.rope_index(inputs.input_ids, inputs.mm_token_type_ids, inputs.image_grid_thw,
                                   inputs.attention_mask, processing.dims.vision.spatial_merge_size)
    positions = positions[:, 0]
    return Prompt(ids, _identity(ids, runs, images), runs, inputs.pixel_values, inputs.image_grid_thw,
                  positions, int(positions.max()) + 1 if ids else 0)
