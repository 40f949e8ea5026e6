"""Prompt + image preprocessing through the checkpoint's own tokenizer, chat template and
image-processor config, without ``Glm4vProcessor`` (which needs torchvision).

It does exactly what ``Glm4vProcessor.__call__`` does for images: resize/patchify with
``Glm4vImageProcessorPil``, expand each ``<|image|>`` into ``t*h*w / merge^2`` placeholder
tokens, tokenize, and mark placeholders in ``mm_token_type_ids``. Batches are left-padded so
that the last position of every row is a real token (what greedy decoding needs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from trt_pipeline.errors import CheckpointError, ConfigError, ShapeError
from trt_pipeline.models.glm4v.config import Glm4vDims, load_dims

IMAGE_TOKEN = "<|image|>"
# transformers' Glm4v smart_resize refuses max(h, w) / min(h, w) >= 200.
MAX_ASPECT_RATIO = 200
# Pillow's own bomb guard (Image.MAX_IMAGE_PIXELS, about 89 MP) warns at 1x and raises at 2x;
# we refuse at 1x: no phone screenshot comes near it and a decoded 178 MP image is 534 MB of RGB.
MAX_DECODED_PIXELS = 89_478_485


def decode_image(data: Any, *, source: str, path: Path | str | None = None) -> Any:
    """Decode an image (a binary file object) to RGB with decompression-bomb protection.

    Shared by file paths (``generate``) and ``data:`` URLs (``serve``): the size is read from
    the header before any pixel is decoded, so a bomb costs nothing.
    """
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused below instead
            image = Image.open(data)
        with image:
            width, height = image.size
            if width * height > MAX_DECODED_PIXELS:
                raise ShapeError(
                    f"image {source} is {width}x{height} = {width * height:,} pixels, above the "
                    f"{MAX_DECODED_PIXELS:,}-pixel decode limit (a decompression-bomb guard).",
                    path=path,
                    hint="downscale the image first; the model resizes to at most a few megapixels anyway.",
                )
            return image.convert("RGB")
    except Image.DecompressionBombError as error:
        raise ShapeError(
            f"image {source} refused as a decompression bomb ({error}).", path=path,
            hint="downscale the image first.",
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ConfigError(
            f"image {source} cannot be decoded ({error}).", path=path, hint="pass a valid PNG/JPEG/WebP image."
        ) from None


@dataclass
class MultimodalInputs:
    """Model-ready inputs for a batch of prompts (images of all rows packed in order)."""

    input_ids: torch.Tensor  # [B, S] int64, left-padded
    attention_mask: torch.Tensor  # [B, S] int64
    mm_token_type_ids: torch.Tensor  # [B, S] int64 (1 = image placeholder)
    pixel_values: torch.Tensor | None  # [N, patch_dim] float32
    image_grid_thw: torch.Tensor | None  # [num_images, 3] int64

    @property
    def num_image_tokens(self) -> int:
        return int(self.mm_token_type_ids.sum())

    def hf_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for transformers' ``Glm4vForConditionalGeneration``."""
        kwargs: dict[str, Any] = {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "mm_token_type_ids": self.mm_token_type_ids,
        }
        if self.pixel_values is not None:
            kwargs.update(pixel_values=self.pixel_values, image_grid_thw=self.image_grid_thw)
        return kwargs


class Glm4vProcessing:
    """Tokenizer + chat template + image processor of one checkpoint folder."""

    def __init__(self, checkpoint: Path | str, dims: Glm4vDims | None = None, *, max_pixels: int | None = None) -> None:
        """``max_pixels`` (height x width of one image) replaces the processor config's limit.

        GLM-4.1V's processor counts ``temporal_patch_size * h * w`` against ``size.longest_edge``;
        the override is given in plain image pixels (as the phone agent's server documents it)
        and converted here, so every backend, transformers' included, sees the same resized image.
        """
        from transformers import AutoTokenizer, Glm4vImageProcessorPil

        self.checkpoint = Path(checkpoint)
        self.dims = dims or load_dims(self.checkpoint)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(self.checkpoint))
        except (OSError, ValueError) as error:
            raise CheckpointError(
                f"{self.checkpoint}: cannot load the tokenizer ({error}).",
                path=self.checkpoint,
                hint="a checkpoint folder needs tokenizer.json + tokenizer_config.json (and a chat template).",
            ) from None
        if not (self.checkpoint / "preprocessor_config.json").is_file():
            raise CheckpointError(
                f"{self.checkpoint / 'preprocessor_config.json'} not found: the image-processor config is needed for images.",
                path=self.checkpoint / "preprocessor_config.json",
                hint="copy preprocessor_config.json from the original checkpoint.",
            )
        self.image_processor = Glm4vImageProcessorPil.from_pretrained(str(self.checkpoint))
        self.merge = self.dims.vision.spatial_merge_size
        self.size_override: dict[str, int] | None = None
        if max_pixels is not None:
            if max_pixels < 1:
                raise ConfigError(f"--max-pixels must be >= 1, got {max_pixels}.", hint="pass e.g. 5000000.")
            size = dict(getattr(self.image_processor, "size", None) or {})
            temporal = self.dims.vision.temporal_patch_size
            self.size_override = {
                "shortest_edge": int(size.get("shortest_edge") or 112 * 112),
                "longest_edge": int(max_pixels) * temporal,
            }

    # -- text ------------------------------------------------------------------------------
    def chat_text(self, prompt: str, num_images: int) -> str:
        """The chat-template string for one user turn with ``num_images`` images before the text."""
        content: list[dict[str, str]] = [{"type": "image"} for _ in range(num_images)]
        content.append({"type": "text", "text": prompt})
        messages = [{"role": "user", "content": content}]
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    @property
    def eos_token_ids(self) -> list[int]:
        from transformers import GenerationConfig

        try:
            config = GenerationConfig.from_pretrained(str(self.checkpoint))
            eos = config.eos_token_id
        except OSError:
            eos = self.tokenizer.eos_token_id
        if eos is None:
            return []
        return [int(eos)] if isinstance(eos, int) else [int(x) for x in eos]

    @property
    def pad_token_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return int(pad if pad is not None else (self.eos_token_ids or [0])[0])

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    # -- images ----------------------------------------------------------------------------
    def load_image(self, path: Path | str) -> Any:
        """Decode one image file to RGB, refusing decompression bombs and undecodable files."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"image {path} not found.", path=path, hint="pass an existing PNG/JPEG file.")
        with open(path, "rb") as handle:
            return decode_image(handle, source=str(path), path=path)

    def process_images(self, images: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Resize + patchify with the checkpoint's processor; its limits become a typed error.

        ``smart_resize`` raises a bare ValueError for an aspect ratio of 200 or more (a
        1x400 strip), which would otherwise surface as a traceback.
        """
        try:
            extra = {"size": self.size_override} if self.size_override else {}
            out = self.image_processor(images=list(images), return_tensors="pt", **extra)
        except ValueError as error:
            size = getattr(self.image_processor, "size", {}) or {}
            raise ShapeError(
                f"the image processor of {self.checkpoint} refused an image: {error}.",
                path=self.checkpoint / "preprocessor_config.json",
                hint=(
                    f"GLM-4.1V's processor needs an aspect ratio under {MAX_ASPECT_RATIO}:1 and resizes to "
                    f"{size.get('shortest_edge', '?')}..{size.get('longest_edge', '?')} pixels; crop or pad the image."
                ),
            ) from None
        return out["pixel_values"].float(), out["image_grid_thw"].long()

    # -- batch -----------------------------------------------------------------------------
    def __call__(self, prompts: Sequence[str], images: Sequence[Sequence[Any]] | None = None) -> MultimodalInputs:
        """Encode a batch: ``prompts[i]`` with ``images[i]`` (PIL images or paths)."""
        images = images or [[] for _ in prompts]
        if len(images) != len(prompts):
            raise ValueError("one image list per prompt is required")
        flat = [self.load_image(im) if isinstance(im, (str, Path)) else im for row in images for im in row]
        pixel_values = grid = None
        tokens_per_image: list[int] = []
        if flat:
            pixel_values, grid = self.process_images(flat)
            tokens_per_image = [int(g.prod()) // self.merge**2 for g in grid]
        rows: list[list[int]] = []
        cursor = 0
        for prompt, row_images in zip(prompts, images):
            text = self.chat_text(prompt, len(row_images))
            rows.append(self._tokenize(text, tokens_per_image[cursor:cursor + len(row_images)]))
            cursor += len(row_images)
        return self._left_pad(rows, pixel_values, grid)

    def encode_messages(
        self, messages: Sequence[dict[str, Any]], images: Sequence[Any], template_kwargs: dict[str, Any] | None = None
    ) -> MultimodalInputs:
        """One conversation (chat-template messages, ``{"type": "image"}`` parts in order of ``images``)
        rendered with the generation prompt, as a batch of one. ``template_kwargs`` (e.g.
        ``enable_thinking``) reach the chat template, as ``chat_template_kwargs`` do in vLLM."""
        pixel_values = grid = None
        tokens_per_image: list[int] = []
        if images:
            pixel_values, grid = self.process_images(images)
            tokens_per_image = [int(g.prod()) // self.merge**2 for g in grid]
        text = self.tokenizer.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=True, **(template_kwargs or {}))
        return self._left_pad([self._tokenize(text, tokens_per_image)], pixel_values, grid)

    def _tokenize(self, text: str, tokens_per_image: Sequence[int]) -> list[int]:
        """Token ids of a rendered chat text with each ``<|image|>`` expanded to its placeholder count."""
        pieces = text.split(IMAGE_TOKEN)
        if len(pieces) - 1 != len(tokens_per_image):
            raise CheckpointError(
                f"{self.checkpoint}: the chat template produced {len(pieces) - 1} image placeholders "
                f"for {len(tokens_per_image)} images.",
                path=self.checkpoint,
                hint="use GLM-4.1V's chat template (it renders <|begin_of_image|><|image|><|end_of_image|>).",
            )
        expanded = pieces[0]
        for count, piece in zip(tokens_per_image, pieces[1:]):
            expanded += IMAGE_TOKEN * count + piece
        return self.tokenizer(expanded, add_special_tokens=False)["input_ids"]

    def _left_pad(
        self, rows: list[list[int]], pixel_values: torch.Tensor | None, grid: torch.Tensor | None
    ) -> MultimodalInputs:
        length = max(len(r) for r in rows)
        pad = self.pad_token_id
        input_ids = torch.full((len(rows), length), pad, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
        for index, row in enumerate(rows):
            input_ids[index, length - len(row) :] = torch.tensor(row, dtype=torch.long)
            attention_mask[index, length - len(row) :] = 1
        mm = ((input_ids == self.dims.image_token_id) & attention_mask.bool()).long()
        return MultimodalInputs(input_ids, attention_mask, mm, pixel_values, grid)
