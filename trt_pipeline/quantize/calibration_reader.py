"""Calibration reader: calibration items -> real per-component ONNX inputs of an export folder.

Quantization scales and AutoCast's precision decisions are only as good as the activations they
are derived from, so the reader produces exactly what the deployed pipeline feeds each graph:

* **vision_encoder**: each item's image goes through the checkpoint's own image processor
  (``OUT/hf/preprocessor_config.json``: smart resize to multiples of patch*merge within
  min/max pixels, normalisation, patchify), plus the host-computed rotary tables and resampled
  position embeddings, one feed per image (:func:`trt_pipeline.models.glm4v.host.vision_feeds`).
* **decoder, prefill**: the instruction through the chat template with the image placeholders
  expanded, token embeddings with the image features (from the fp32 vision encoder on ONNX
  Runtime) written into the placeholder positions, M-RoPE cos/sin, an all-ones attention mask and
  an empty KV cache (``past_sequence_length`` 0; the cache arrays of an ``--kv-cache inplace``
  export then hold only the ``sequence_length`` rows the graph writes, zeroed).
* **decoder, decode-like**: the fp32 decoder is run on ONNX Runtime for the prefill; its greedy
  next token is then fed alone (``sequence_length`` 1) with the prefill's ``present.*`` as
  ``past_key_values.*`` (a filled KV cache), the attention mask grown by one and the next M-RoPE
  position. ``decode_steps`` such steps per item (default 1).
* exports without a vision encoder serve text-only prompts: image items are then used with their
  instruction alone (counted as ``images_dropped`` in :meth:`CalibrationReader.summary`).

Feeds are plain ``dict[str, numpy.ndarray]`` keyed by ONNX input names (float32 / int64, batch 1),
the format ModelOpt's calibration data readers and ONNX Runtime take. Every shape is checked
against the export's symbolic ranges (``OUT/export.json`` ``dims``) *before* any model runs; an item
outside them raises :class:`~trt_pipeline.errors.CalibrationError` naming the item and the range
(a TensorRT engine built from those ranges could not execute it, so calibrating on it would be
meaningless).

``max_samples`` bounds the work: that many items are taken at evenly spaced positions of the
split (so a small budget still mixes languages, screens, photos and text-only prompts). All
decoder prefill feeds come before all decode feeds: ModelOpt derives per-MatMul decisions (GEMV /
MHA sequence-length heuristics) from the *first* calibration feed, which must be a prefill.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trt_pipeline.artifacts.manifests import read_export_manifest
from trt_pipeline.config import DimRange
from trt_pipeline.errors import CalibrationError
from trt_pipeline.progress import progress_bar

VISION = "vision_encoder"
DECODER = "decoder"


@dataclass
class PreparedSample:
    """One calibration item after tokenization and image preprocessing (no model run yet)."""

    item: Any  # trt_pipeline.quantize.dataset.CalibrationItem
    inputs: Any  # trt_pipeline.models.glm4v.processing.MultimodalInputs
    num_patches: int
    sequence_length: int

    @property
    def id(self) -> str:
        return str(self.item.id)


@dataclass
class CalibrationFeeds:
    """Per-component feed lists (numpy, keyed by ONNX input name) and which item each came from."""

    vision_encoder: list[dict[str, np.ndarray]] = field(default_factory=list)
    decoder_prefill: list[dict[str, np.ndarray]] = field(default_factory=list)
    decoder_decode: list[dict[str, np.ndarray]] = field(default_factory=list)
    vision_ids: list[str] = field(default_factory=list)
    prefill_ids: list[str] = field(default_factory=list)
    decode_ids: list[str] = field(default_factory=list)

    @property
    def decoder(self) -> list[dict[str, np.ndarray]]:
        """Prefill feeds first, then decode-like feeds (ModelOpt inspects the first feed)."""
        return self.decoder_prefill + self.decoder_decode


def select_items(items: Sequence[Any], max_samples: int | None) -> list[Any]:
    """``max_samples`` items at evenly spaced positions (all of them when None or larger)."""
    items = list(items)
    if max_samples is None or max_samples >= len(items):
        return items
    if max_samples < 1:
        raise CalibrationError(f"--calib-samples must be >= 1, got {max_samples}.")
    if max_samples == 1:
        return [items[0]]
    positions = sorted({round(i * (len(items) - 1) / (max_samples - 1)) for i in range(max_samples)})
    return [items[p] for p in positions]


class CalibrationReader:
    """Turn calibration items into per-component ONNX feeds for the export in ``out_dir``.

    Args:
        out_dir: export folder (``export.json``, ``hf/``, ``embeddings/``, ``onnx/fp32/``).
        items: :class:`~trt_pipeline.quantize.dataset.CalibrationItem` s (``load_split(folder)``).
        max_samples: use at most this many items (evenly spaced); None = all.
        decode_steps: decode-like feeds per item (each one token with a filled KV cache).
        show_progress: show a progress bar while building feeds.
        description: label of the progress bar.

    Feeds are built lazily on first access (:meth:`build`); :meth:`prepare` only tokenizes,
    preprocesses images and checks ranges (cheap, no model run).

    Raises:
        CalibrationError: no items, an undecodable image, or an input outside the export's ranges.
        OnnxModelError: ``out_dir`` is not an export folder or its fp32 models are missing.
    """

    def __init__(
        self,
        out_dir: Path | str,
        items: Sequence[Any],
        max_samples: int | None = None,
        *,
        decode_steps: int = 1,
        show_progress: bool = False,
        description: str = "calibration inputs",
    ) -> None:
        self.out_dir = Path(out_dir)
        self.manifest = read_export_manifest(self.out_dir)
        self.ranges: dict[str, DimRange] = self.manifest.ranges
        self.components: list[str] = list(self.manifest.components)
        if not items:
            raise CalibrationError(
                "no calibration items were given.",
                hint="pass the items of a calibration split (load_split('calibration/calib')).",
            )
        if decode_steps < 0:
            raise CalibrationError(f"decode_steps must be >= 0, got {decode_steps}.")
        self.items = select_items(items, max_samples)
        self.decode_steps = decode_steps
        self.show_progress = show_progress
        self.description = description
        self._prepared: list[PreparedSample] | None = None
        self._feeds: CalibrationFeeds | None = None
        self._processing: Any = None
        self._assets: Any = None
        self.images_dropped = 0  # image items calibrated text-only because the export has no vision encoder

    # -- public API -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.items)

    @property
    def item_ids(self) -> list[str]:
        return [str(item.id) for item in self.items]

    def feeds(self, component: str) -> list[dict[str, np.ndarray]]:
        """All feeds of one component (``vision_encoder`` or ``decoder``)."""
        built = self.build()
        if component == VISION:
            return built.vision_encoder
        if component == DECODER:
            return built.decoder
        raise CalibrationError(f"unknown component {component!r}; choose from {VISION}, {DECODER}.")

    @property
    def vision_feeds(self) -> list[dict[str, np.ndarray]]:
        return self.build().vision_encoder

    @property
    def decoder_feeds(self) -> list[dict[str, np.ndarray]]:
        return self.build().decoder

    @property
    def decoder_prefill_feeds(self) -> list[dict[str, np.ndarray]]:
        return self.build().decoder_prefill

    @property
    def decoder_decode_feeds(self) -> list[dict[str, np.ndarray]]:
        return self.build().decoder_decode

    @property
    def built(self) -> bool:
        """Whether the feeds were built (running the fp32 graphs): a stage that needs none never builds them."""
        return self._feeds is not None

    def summary(self, build: bool = True) -> dict[str, Any]:
        """Counts and shapes for manifests: items, feeds per component, ranges covered; with ``build``
        False, feeds that were never built (a stage that needs none) are None, not built now."""
        built = self.build() if build else self._feeds
        prepared = self.prepare()
        return {
            "items": self.item_ids,
            "num_items": len(self.items),
            "images_dropped": self.images_dropped,
            "decode_steps": self.decode_steps,
            "feeds": None if built is None else {
                VISION: len(built.vision_encoder),
                "decoder_prefill": len(built.decoder_prefill),
                "decoder_decode": len(built.decoder_decode),
            },
            "num_patches": _span([s.num_patches for s in prepared if s.num_patches]),
            "sequence_length": _span([s.sequence_length for s in prepared]),
        }

    # -- preparation (cheap, checks ranges) --------------------------------------------------
    @property
    def processing(self) -> Any:
        if self._processing is None:
            from trt_pipeline.models.glm4v.processing import Glm4vProcessing

            self._processing = Glm4vProcessing(self.manifest.layout.hf_dir, max_pixels=self.manifest.max_pixels)
        return self._processing

    @property
    def assets(self) -> Any:
        if self._assets is None:
            from trt_pipeline.models.glm4v.generation import HostAssets

            self._assets = HostAssets.from_export_dir(self.out_dir)
        return self._assets

    def prepare(self) -> list[PreparedSample]:
        """Tokenize + preprocess every selected item and check it against the exported ranges."""
        if self._prepared is not None:
            return self._prepared
        from trt_pipeline.quantize.dataset import load_image

        prepared = []
        self.images_dropped = 0
        for item in self.items:
            images = [load_image(item)] if getattr(item, "image_path", None) is not None else []
            if images and VISION not in self.components:
                # a decoder-only export serves text-only prompts: calibrate it on the instruction alone
                images = []
                self.images_dropped += 1
            inputs = self.processing([item.instruction], [images])
            patches = int(inputs.pixel_values.shape[0]) if inputs.pixel_values is not None else 0
            sample = PreparedSample(item, inputs, patches, int(inputs.input_ids.shape[1]))
            self._check_ranges(sample)
            prepared.append(sample)
        self._prepared = prepared
        return prepared

    def _check_ranges(self, sample: PreparedSample) -> None:
        merge2 = self.assets.dims.vision.spatial_merge_size ** 2
        checks: list[tuple[str, int, str]] = []
        if sample.num_patches:
            what = f"its image {sample.item.image_path} preprocesses to"
            checks.append(("num_patches", sample.num_patches, f"{what} {sample.num_patches} patches"))
            checks.append(("num_image_tokens", sample.num_patches // merge2,
                           f"{what} {sample.num_patches // merge2} image tokens"))
        seq = sample.sequence_length
        checks.append(("sequence_length", seq, f"its prompt is {seq} tokens long"))
        checks.append(("total_sequence_length", seq, f"its prefill attends to {seq} tokens"))
        for step in range(self.decode_steps):
            past = seq + step
            checks.append(("past_sequence_length", past, f"decode step {step + 1} has a KV cache of {past} tokens"))
            checks.append(("total_sequence_length", past + 1, f"decode step {step + 1} attends to {past + 1} tokens"))
        for axis, value, what in checks:
            span = self.ranges.get(axis)
            if span is None or span.min <= value <= span.max:
                continue
            raise CalibrationError(
                f"calibration item {sample.id!r} is outside the exported ranges: {what}, but the export allows "
                f"{axis} in [{span.min}, {span.max}] ({self.manifest.path}).",
                path=self.manifest.path,
                hint=_range_hint(axis),
            )

    # -- feeds (runs the fp32 models on ONNX Runtime) ----------------------------------------
    def build(self) -> CalibrationFeeds:
        """Build (once) the feeds of every component; returns them."""
        if self._feeds is not None:
            return self._feeds
        from trt_pipeline.runtime.onnxruntime_runner import onnx_path, ort_runner

        prepared = self.prepare()
        feeds = CalibrationFeeds()
        with contextlib.ExitStack() as stack:
            vision = decoder = None
            if VISION in self.components:
                vision = stack.enter_context(ort_runner(onnx_path(self.out_dir, "fp32", VISION)))
            if DECODER in self.components:
                decoder = stack.enter_context(ort_runner(onnx_path(self.out_dir, "fp32", DECODER)))
            progress = stack.enter_context(progress_bar(self.show_progress))
            task = progress.add_task(self.description, total=len(prepared))
            for sample in prepared:
                features = None
                if sample.num_patches and vision is not None:
                    image_feeds = self.image_feeds(sample, vision)
                    feeds.vision_encoder.extend(image_feeds)
                    feeds.vision_ids.extend([sample.id] * len(image_feeds))
                    features = np.concatenate([vision.infer(feed)["image_features"] for feed in image_feeds])
                if decoder is not None:
                    prefill, decodes = self.decoder_feeds_for(sample, features, decoder)
                    feeds.decoder_prefill.append(prefill)
                    feeds.prefill_ids.append(sample.id)
                    feeds.decoder_decode.extend(decodes)
                    feeds.decode_ids.extend([sample.id] * len(decodes))
                progress.advance(task)
        self._feeds = feeds
        return feeds

    def image_feeds(self, sample: PreparedSample, vision_runner: Any = None) -> list[dict[str, np.ndarray]]:
        """One vision-encoder feed per image of the item (the encoder takes one image per call)."""
        from trt_pipeline.models.glm4v.stepper import FeedBuilder

        builder = FeedBuilder.for_runner(self.assets, vision_runner) if vision_runner else FeedBuilder(self.assets)
        return [dict(feed) for feed in builder.vision_feeds(sample.inputs.pixel_values, sample.inputs.image_grid_thw)]

    def decoder_feeds_for(
        self, sample: PreparedSample, image_features: np.ndarray | None, decoder_runner: Any
    ) -> tuple[dict[str, np.ndarray], list[dict[str, np.ndarray]]]:
        """The prefill feed of one item and its ``decode_steps`` decode-like feeds.

        The prefill asks for logits at every position, so the LM head is calibrated on the
        activations of every prompt position (as before ``logits_positions`` existed). Each feed
        owns its arrays (:func:`~trt_pipeline.models.glm4v.kept_feeds.kept_decoder_feed`): an
        ``inplace`` cache is fed as views of the stepper's growing buffers.
        """
        import torch

        from trt_pipeline.models.glm4v.kept_feeds import kept_decoder_feed
        from trt_pipeline.models.glm4v.stepper import DecoderStepper

        features = torch.from_numpy(np.asarray(image_features, np.float32)) if image_features is not None else None
        stepper = DecoderStepper(self.assets, decoder_runner)
        if not self.decode_steps:
            inputs = sample.inputs
            embeds = stepper.builder.prompt_embeddings(inputs, features)
            prefill = stepper.prepare(embeds, inputs.attention_mask, stepper.builder.prompt_positions(inputs), "all")
            return kept_decoder_feed(prefill, stepper.builder), []
        step = stepper.prefill_prompt(sample.inputs, features, logits="all")
        prefill, decodes = kept_decoder_feed(step.feed, stepper.builder), []
        for index in range(self.decode_steps):
            feed, positions = stepper.prepare_decode(step.last_logits.argmax(-1))
            decodes.append(kept_decoder_feed(feed, stepper.builder))
            if index + 1 < self.decode_steps:
                step = stepper.step(feed, positions)
        return prefill, decodes


def _f32(tensor: Any) -> np.ndarray:
    array = tensor.detach().cpu().numpy() if hasattr(tensor, "detach") else np.asarray(tensor)
    return np.ascontiguousarray(array.astype(np.float32, copy=False))


def _span(values: list[int]) -> dict[str, int] | None:
    return {"min": min(values), "max": max(values)} if values else None


def _range_hint(axis: str) -> str:
    return {
        "num_patches": "re-export with a larger --max-image-tokens, or use a smaller image (the processor's "
                       "max_pixels decides the patch count).",
        "num_image_tokens": "re-export with a larger --max-image-tokens, or use a smaller image.",
        "sequence_length": "re-export with a larger --max-seq, or shorten the instruction.",
        "past_sequence_length": "re-export with a larger --max-kv, or shorten the instruction.",
        "total_sequence_length": "re-export with larger --max-seq/--max-kv, or shorten the instruction.",
    }.get(axis, "re-export with wider ranges.")


__all__ = ["CalibrationFeeds", "CalibrationReader", "PreparedSample", "select_items"]
