"""Inputs of a comparison: held-out items plus inputs at the export's profile extremes.

Every runner (reference and candidates) receives the same feed dicts from a :class:`FeedLoader`,
a Polygraphy data loader (iterable with random access) whose feeds carry the ONNX inputs plus the
reference-only inputs of :data:`~trt_pipeline.runtime.transformers_runner.REFERENCE_INPUTS`
(``image_grid_thw``, ``position_ids``); ``Comparator.run`` passes each runner only the inputs it
declares. Each feed has a label (``heldout-003/prefill``, ``extreme/b4-s256-p512``) used in reports.

* **vision_encoder**: every held-out image (preprocessed with the checkpoint's image processor), then
  held-out images resized to ``num_patches`` min and max (one image per feed: the encoder takes one
  image per call; prompts with several images are several calls).
* **decoder**: per held-out item a prefill (prompt with image features from the *reference* vision
  tower, M-RoPE positions from ``host.rope_index``) and one decode step (the reference's KV cache
  from that prefill, its greedy next token); then the corners of the profile: batch_size x
  sequence_length x past_sequence_length at their min and max, on windows of the held-out prompts'
  text with a KV cache produced by the reference.

Items whose shapes fall outside the export's ranges are skipped with a note (a TensorRT profile
could not run them).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trt_pipeline.config import DimRange
from trt_pipeline.errors import CalibrationError


@dataclass
class Sample:
    label: str
    feed: Any  # OrderedDict[str, np.ndarray]
    dims: dict[str, int] = field(default_factory=dict)


class FeedLoader:
    """A Polygraphy data loader over prepared feed dicts (same feeds for every runner)."""

    def __init__(self, component: str, samples: Sequence[Sample], notes: Sequence[str] = ()) -> None:
        self.component = component
        self.samples = list(samples)
        self.notes = list(notes)
        self.input_metadata = None  # set by Comparator.run; feeds are fixed, so unused

    def __iter__(self) -> Iterator[Any]:
        return (sample.feed for sample in self.samples)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Any:
        return self.samples[index].feed

    @property
    def labels(self) -> list[str]:
        return [s.label for s in self.samples]


@dataclass
class HeldoutInput:
    """One held-out item, tokenized and preprocessed like ``autoglm-trt generate`` does."""

    id: str
    instruction: str
    image: str | None
    inputs: Any  # MultimodalInputs (batch 1)

    @property
    def num_patches(self) -> int:
        return 0 if self.inputs.pixel_values is None else int(self.inputs.pixel_values.shape[0])

    @property
    def sequence_length(self) -> int:
        return int(self.inputs.input_ids.shape[1])


def default_heldout_dir() -> Path:
    from trt_pipeline.quantize.dataset import default_root

    return default_root() / "heldout"


def load_heldout(processing: Any, folder: Path | None, max_items: int | None = None) -> list[HeldoutInput]:
    """Held-out items of ``folder`` (default ``calibration/heldout``) as model inputs, in file order."""
    from trt_pipeline.quantize.dataset import load_image, load_split

    folder = Path(folder) if folder is not None else default_heldout_dir()
    items = load_split(folder)
    if max_items is not None:
        items = items[:max_items]
    out = []
    for item in items:
        images = [[load_image(item)]] if item.has_image else [[]]
        inputs = processing([item.instruction], images)
        out.append(HeldoutInput(item.id, item.instruction, str(item.image_path) if item.image_path else None, inputs))
    if not out:
        raise CalibrationError(f"{folder} holds no held-out items.", path=folder)
    return out


# ------------------------------------------------------------------------------------------------
# vision encoder
# ------------------------------------------------------------------------------------------------


def vision_feed(assets: Any, pixel_values: torch.Tensor, grid: torch.Tensor) -> Any:
    """ONNX inputs of the vision encoder for one image (+ ``image_grid_thw`` for the reference)."""
    return feed_builder(assets).vision_feed(pixel_values, grid)


def _grids(num_patches: int, merge: int, split: bool) -> list[list[int]]:
    from trt_pipeline.export.validate import image_grids

    return image_grids(num_patches, merge, split)


def image_at_grid(processing: Any, image: Any, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``image`` resized to exactly ``height x width`` patches and preprocessed (no smart resize)."""
    from PIL import Image

    patch = processing.dims.vision.patch_size
    resized = image.resize((width * patch, height * patch), Image.BICUBIC)
    out = processing.image_processor(images=[resized], do_resize=False, return_tensors="pt")
    return out["pixel_values"].float(), out["image_grid_thw"].long()


def vision_samples(
    assets: Any, heldout: Sequence[HeldoutInput], ranges: dict[str, DimRange], *, extremes: bool = True, seed: int = 0,
    processing: Any = None,
) -> FeedLoader:
    """Every held-out image, then one image at ``num_patches`` min and one at max.

    The extremes show held-out images resized to the extreme grids (with ``processing``; real
    pixel statistics, which an INT8 calibration is fitted to); without held-out images or
    ``processing`` they are random pixels.
    """
    patches = ranges["num_patches"]
    merge = assets.dims.vision.spatial_merge_size
    samples, notes = [], []
    images = []
    for entry in heldout:
        if entry.inputs.pixel_values is None:
            continue
        if entry.image is not None:
            images.append(entry.image)
        n = entry.num_patches
        if not patches.min <= n <= patches.max:
            notes.append(f"skipped {entry.id} image: {n} patches outside the export's num_patches "
                         f"{patches.min}..{patches.max}")
            continue
        grid = entry.inputs.image_grid_thw
        samples.append(Sample(f"{entry.id}/image", vision_feed(assets, entry.inputs.pixel_values, grid),
                              {"num_patches": n, "images": int(grid.shape[0])}))
    if extremes:
        generator = torch.Generator().manual_seed(seed)
        picked = 0
        for name, n in (("min", patches.min), ("max", patches.max)):
            grids = _grids(n, merge, split=False)
            if processing is not None and images:
                parts = []
                for _t, h, w in grids:
                    parts.append(image_at_grid(processing, _load_rgb(images[picked % len(images)]), h, w))
                    picked += 1
                pixels = torch.cat([p for p, _ in parts])
                grid = torch.cat([g for _, g in parts])
            else:
                grid = torch.tensor(grids, dtype=torch.long)
                pixels = torch.randn(int(grid.prod(-1).sum()), assets.dims.vision.patch_dim, generator=generator)
            n = int(grid.prod(-1).sum())
            label = f"extreme/patches-{name}-{n}"
            samples.append(Sample(label, vision_feed(assets, pixels, grid), {"num_patches": n, "images": int(grid.shape[0])}))
    return FeedLoader("vision_encoder", samples, notes)


def _load_rgb(path: str) -> Any:
    from PIL import Image

    with Image.open(path) as image:
        return image.convert("RGB")


# ------------------------------------------------------------------------------------------------
# decoder
# ------------------------------------------------------------------------------------------------


def feed_builder(assets: Any, kv_cache: str = "concat") -> Any:
    """Feeds shared by every runner of a comparison: all inputs, float32, plus the reference-only ones;
    the KV cache in the export's layout (``kv_cache``, export.json's ``decoder_graph.kv_cache``)."""
    from trt_pipeline.models.glm4v.stepper import FeedBuilder

    return FeedBuilder(assets, reference_inputs=True, kv_cache=kv_cache)


def decoder_feed(
    assets: Any, embeds: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor, past: dict[str, np.ndarray],
    kv_cache: str = "concat",
) -> Any:
    """ONNX inputs of the decoder, logits at every position (+ ``position_ids`` [3, B, S] for the reference)."""
    return feed_builder(assets, kv_cache).decoder_feed(embeds, attention_mask, positions, past, logits="all")


def empty_past(assets: Any, batch: int, kv_cache: str = "concat") -> dict[str, np.ndarray]:
    return feed_builder(assets, kv_cache).empty_past(batch)


def _in_range(ranges: dict[str, DimRange], **dims: int) -> list[str]:
    return [f"{name} {value} outside {ranges[name].min}..{ranges[name].max}"
            for name, value in dims.items() if name in ranges and not ranges[name].min <= value <= ranges[name].max]


def _stepper(assets: Any, reference_decoder: Any) -> Any:
    """A stepper over the reference decoder, its feeds in the cache layout that runner declares."""
    from trt_pipeline.models.glm4v.stepper import DecoderStepper, runner_kv_cache

    builder = feed_builder(assets, runner_kv_cache(reference_decoder))
    return DecoderStepper(assets, reference_decoder, builder=builder, check_inputs=False)


def _sample(label: str, feed: Any, stepper: Any, dims: dict[str, int]) -> Sample:
    """A feed every runner gets later: its own arrays (an inplace cache's are views of the stepper's arena)."""
    from trt_pipeline.models.glm4v.kept_feeds import kept_decoder_feed

    return Sample(label, kept_decoder_feed(feed, stepper.builder), dims)


@torch.no_grad()
def decoder_samples(
    assets: Any,
    heldout: Sequence[HeldoutInput],
    ranges: dict[str, DimRange],
    reference_vision: Any,
    reference_decoder: Any,
    *,
    extremes: bool = True,
    seed: int = 0,
) -> FeedLoader:
    """Prefill + one decode step per held-out item, then the profile corners.

    ``reference_vision`` / ``reference_decoder`` are the (active) transformers runners: image
    features and KV caches in the inputs come from the reference, so every candidate sees inputs
    the reference itself would produce (in the KV-cache layout the reference decoder declares).
    """
    samples, notes = [], []
    stepper = _stepper(assets, reference_decoder)
    for entry in heldout:
        inputs = entry.inputs
        seq = entry.sequence_length
        problems = _in_range(ranges, sequence_length=seq, total_sequence_length=seq + 1, past_sequence_length=seq)
        if problems:
            notes.append(f"skipped {entry.id} decoder samples: {'; '.join(problems)}")
            continue
        features = None
        if inputs.pixel_values is not None:
            out = reference_vision.infer(vision_feed(assets, inputs.pixel_values, inputs.image_grid_thw), check_inputs=False)
            features = torch.from_numpy(np.asarray(out["image_features"], np.float32).copy())
        prefill = stepper.prefill_prompt(inputs, features, logits="all")
        samples.append(_sample(f"{entry.id}/prefill", prefill.feed, stepper,
                               {"batch_size": 1, "sequence_length": seq, "past_sequence_length": 0}))
        decode, _ = stepper.prepare_decode(prefill.last_logits.argmax(-1))
        samples.append(_sample(f"{entry.id}/decode", decode, stepper,
                               {"batch_size": 1, "sequence_length": 1, "past_sequence_length": seq}))
    if extremes:
        samples += corner_samples(assets, ranges, reference_decoder, seed=seed, token_pool=text_token_pool(heldout),
                                  notes=notes)
    return FeedLoader("decoder", samples, notes)


def text_token_pool(heldout: Sequence[HeldoutInput]) -> torch.Tensor | None:
    """The text tokens of every held-out prompt, concatenated (image placeholders and padding removed)."""
    pieces = [e.inputs.input_ids[(e.inputs.mm_token_type_ids == 0) & e.inputs.attention_mask.bool()] for e in heldout]
    pool = torch.cat(pieces) if pieces else torch.zeros(0, dtype=torch.long)
    return pool if pool.numel() else None


@torch.no_grad()
def corner_samples(
    assets: Any, ranges: dict[str, DimRange], reference_decoder: Any, *, seed: int = 0,
    token_pool: torch.Tensor | None = None, notes: list[str] | None = None,
) -> list[Sample]:
    """batch_size x sequence_length x past_sequence_length at min and max (text tokens, no padding).

    Tokens are windows of ``token_pool`` (the held-out prompts' text, cycled, a random offset per
    row) so long sequences stay in the distribution the model (and an INT8 calibration) sees;
    without a pool they are uniform random ids. A corner the decoder's KV-cache contract refuses
    (:func:`~trt_pipeline.models.glm4v.decoder_ops.step_refusal`: a shared cache's batched chunk) is
    left out and named in ``notes``.
    """
    from trt_pipeline.models.glm4v.decoder_ops import step_refusal

    text = assets.dims.text
    batch_r, seq_r, past_r = ranges["batch_size"], ranges["sequence_length"], ranges["past_sequence_length"]
    total_max = ranges["total_sequence_length"].max if "total_sequence_length" in ranges else None
    vocab = min(text.vocab_size, assets.dims.image_start_token_id)
    generator = torch.Generator().manual_seed(seed)
    stepper = _stepper(assets, reference_decoder)
    samples = []
    for batch, seq, past in itertools.product(
        sorted({batch_r.min, batch_r.max}), sorted({seq_r.min, seq_r.max}), sorted({past_r.min, past_r.max})
    ):
        batch, seq = max(batch, 1), max(seq, 1)
        if total_max is not None and past + seq > total_max:
            continue
        why = step_refusal(stepper.builder.kv_layout.kind, batch, seq, past)
        if why is not None:
            if notes is not None:
                notes.append(f"skipped extreme/b{batch}-s{seq}-p{past}: {why}")
            continue
        if token_pool is not None:
            starts = torch.randint(0, len(token_pool), (batch,), generator=generator)
            index = (starts[:, None] + torch.arange(past + seq)[None, :]) % len(token_pool)
            ids = token_pool[index]
        else:
            ids = torch.randint(0, vocab, (batch, past + seq), generator=generator)
        stepper.reset(batch)
        if past:
            stepper.prefill_tokens(ids[:, :past])
        positions = torch.arange(past, past + seq).view(1, 1, -1).expand(3, batch, -1)
        feed = stepper.prepare(stepper.builder.token_embeddings(ids[:, past:]),
                               torch.ones(batch, seq, dtype=torch.long), positions, logits="all")
        samples.append(_sample(f"extreme/b{batch}-s{seq}-p{past}", feed, stepper,
                               {"batch_size": batch, "sequence_length": seq, "past_sequence_length": past}))
    return samples


__all__ = [
    "FeedLoader",
    "HeldoutInput",
    "Sample",
    "corner_samples",
    "decoder_feed",
    "decoder_samples",
    "default_heldout_dir",
    "load_heldout",
    "vision_feed",
    "vision_samples",
]
