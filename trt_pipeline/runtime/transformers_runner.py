"""The PyTorch reference as Polygraphy runners: transformers' ``Glm4vForConditionalGeneration``.

One runner per exported component, fed the *same* feed dict as the ONNX component, so
``Comparator.run`` can drive the reference exactly like ONNX Runtime, the export-friendly torch
modules and TensorRT:

* :class:`TransformersVisionRunner` takes ``pixel_values`` and the image grid and runs
  ``model.get_image_features`` (transformers' own patch embedding, bicubic position resampling,
  2-D rotary and per-image attention). The host-computed inputs of the ONNX encoder
  (``rotary_cos``, ``rotary_sin``, ``position_embeddings``) are ignored: the
  reference recomputes them, so a bug in our host helpers shows up as a mismatch.
* :class:`TransformersDecoderRunner` takes ``inputs_embeds``, ``attention_mask``,
  ``logits_positions`` and ``past_key_values.*`` and runs ``model.model.language_model`` with a ``DynamicCache`` built from
  the past arrays, followed by ``model.lm_head``. The cache arrays are in the export's KV-cache
  layout (``kv_cache``: ``concat`` ``[B, kv, past, D]`` or ``inplace`` ``[B, past + S, kv * D]``, whose
  last S free rows it ignores), converted to and from transformers' heads layout by
  :class:`~trt_pipeline.models.glm4v.io_spec.KvLayout`, so its ``present.*`` compare one to one. Its rotary tables come from transformers'
  ``Glm4vTextRotaryEmbedding`` for the 3-axis ``position_ids``; with ``check_rope=True`` (default)
  it also reads the fed ``rope_cos``/``rope_sin`` and refuses a feed whose tables disagree with
  transformers' for those positions (so a comparison never silently lines up different inputs).

Reference-only inputs: the grid and the M-RoPE position ids cannot be recovered from the ONNX
inputs, so data loaders add them to every feed (:data:`REFERENCE_INPUTS`). Polygraphy's
``Comparator.run`` hands each runner only the inputs its metadata declares, so ONNX Runtime and
TensorRT never see them.

Outputs have the ONNX names (``image_features``; ``logits``, ``present.{i}.key``/``.value``).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from polygraphy.backend.base import BaseRunner
from polygraphy.common import TensorMetadata

from trt_pipeline.errors import AccuracyError, CheckpointError, ShapeError
from trt_pipeline.models.glm4v.io_spec import KvLayout

#: Inputs that only the reference runners read (added by data loaders beside the ONNX inputs).
REFERENCE_INPUTS: dict[str, tuple[str, ...]] = {
    "vision_encoder": ("image_grid_thw",),
    "decoder": ("position_ids",),
}

#: Largest |fed rope - transformers rope| accepted by ``check_rope`` (float32 cos/sin of the same angles).
ROPE_ATOL = 1e-5


class TransformersReference:
    """Loads ``Glm4vForConditionalGeneration`` (float32, eval) once and shares it between runners."""

    def __init__(self, checkpoint: Path | str | None = None, *, model: Any = None) -> None:
        if checkpoint is None and model is None:
            raise ValueError("pass a checkpoint folder or a loaded model")
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self._model = model
        self._lock = threading.Lock()

    @property
    def model(self) -> Any:
        with self._lock:
            if self._model is None:
                self._model = load_reference_model(self.checkpoint)  # type: ignore[arg-type]
            return self._model

    @property
    def loaded(self) -> bool:
        return self._model is not None


def load_reference_model(checkpoint: Path | str) -> Any:
    """transformers' GLM-4.1V in float32 on CPU; a folder it cannot load raises CheckpointError."""
    from transformers import Glm4vForConditionalGeneration

    checkpoint = Path(checkpoint)
    if not (checkpoint / "config.json").is_file():
        raise CheckpointError(
            f"the PyTorch reference needs the source checkpoint, but {checkpoint} has no config.json.",
            path=checkpoint,
            hint="pass --checkpoint with the Hugging Face checkpoint folder the export was made from.",
        )
    try:
        model = Glm4vForConditionalGeneration.from_pretrained(str(checkpoint), dtype=torch.float32)
    except (OSError, ValueError) as error:
        raise CheckpointError(
            f"transformers cannot load {checkpoint}: {str(error).splitlines()[0]}",
            path=checkpoint,
            hint="pass the Hugging Face checkpoint folder the export was made from.",
        ) from None
    return model.eval()


def _as_reference(source: TransformersReference | Any) -> TransformersReference:
    return source if isinstance(source, TransformersReference) else TransformersReference(model=source)


class _TransformersRunner(BaseRunner):
    component = ""

    def __init__(self, reference: TransformersReference | Any, name: str | None = None) -> None:
        super().__init__(name=name, prefix=f"transformers-{self.component}")
        self.reference = _as_reference(reference)

    def activate_impl(self) -> None:
        self.model = self.reference.model

    def deactivate_impl(self) -> None:
        del self.model

    @staticmethod
    def _to_result(value: torch.Tensor, use_torch: bool) -> Any:
        value = value.detach().float().contiguous()
        return value if use_torch else value.numpy()


class TransformersVisionRunner(_TransformersRunner):
    """``pixel_values`` + ``image_grid_thw`` -> ``image_features`` through transformers' vision tower."""

    component = "vision_encoder"

    def get_input_metadata_impl(self) -> TensorMetadata:
        config = self.reference.model.config.vision_config
        patch_dim = config.in_channels * config.temporal_patch_size * config.patch_size**2
        meta = TensorMetadata()
        meta.add("pixel_values", dtype=np.dtype("float32"), shape=[None, patch_dim])
        meta.add("image_grid_thw", dtype=np.dtype("int64"), shape=[None, 3])
        return meta

    @torch.no_grad()
    def infer_impl(self, feed_dict: dict[str, Any]) -> OrderedDict:
        if "image_grid_thw" not in feed_dict:
            raise ShapeError(
                f"{self.name}: the reference vision runner needs `image_grid_thw` beside `pixel_values`.",
                hint="build feeds with trt_pipeline.compare.data (it adds the reference-only inputs).",
            )
        use_torch = any(isinstance(v, torch.Tensor) for v in feed_dict.values())
        pixels = torch.as_tensor(feed_dict["pixel_values"]).float()
        grid = torch.as_tensor(feed_dict["image_grid_thw"]).long()
        start = time.perf_counter()
        pooled = self.model.model.get_image_features(pixels, grid, return_dict=True).pooler_output
        features = torch.cat(list(pooled), 0) if isinstance(pooled, (list, tuple)) else pooled
        self.inference_time = time.perf_counter() - start
        return OrderedDict(image_features=self._to_result(features, use_torch))


class TransformersDecoderRunner(_TransformersRunner):
    """The decoder's feed dict (+ ``position_ids``) -> ``logits`` and ``present.*`` through transformers."""

    component = "decoder"

    def __init__(self, reference: TransformersReference | Any, name: str | None = None, check_rope: bool = True,
                 kv_cache: str = "concat") -> None:
        super().__init__(reference, name=name)
        self.check_rope = check_rope
        self.kv_cache = kv_cache
        KvLayout(kv_cache, 1, 1)  # an unknown layout fails here, not at the first run

    @property
    def kv_layout(self) -> KvLayout:
        """The fed cache's layout (head_dim as transformers' attention computes it: hidden / heads)."""
        text = self.reference.model.config.text_config
        return KvLayout(self.kv_cache, text.num_key_value_heads, text.hidden_size // text.num_attention_heads)

    @property
    def num_layers(self) -> int:
        return int(self.reference.model.config.text_config.num_hidden_layers)

    def get_input_metadata_impl(self) -> TensorMetadata:
        text = self.reference.model.config.text_config
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
        rotary = int(head_dim * text.rope_parameters.get("partial_rotary_factor", 1.0))
        kv = [None if isinstance(d, str) else d for d in self.kv_layout.symbolic("past")]
        meta = TensorMetadata()
        meta.add("inputs_embeds", dtype=np.dtype("float32"), shape=[None, None, text.hidden_size])
        meta.add("attention_mask", dtype=np.dtype("int64"), shape=[None, None])
        if self.check_rope:
            meta.add("rope_cos", dtype=np.dtype("float32"), shape=[None, None, rotary])
            meta.add("rope_sin", dtype=np.dtype("float32"), shape=[None, None, rotary])
        meta.add("position_ids", dtype=np.dtype("int64"), shape=[3, None, None])
        meta.add("logits_positions", dtype=np.dtype("int64"), shape=[None])
        for i in range(text.num_hidden_layers):
            meta.add(f"past_key_values.{i}.key", dtype=np.dtype("float32"), shape=kv)
            meta.add(f"past_key_values.{i}.value", dtype=np.dtype("float32"), shape=kv)
        return meta

    @torch.no_grad()
    def infer_impl(self, feed_dict: dict[str, Any]) -> OrderedDict:
        from transformers import DynamicCache

        if "position_ids" not in feed_dict:
            raise ShapeError(
                f"{self.name}: the reference decoder runner needs `position_ids` [3, batch, sequence] "
                "beside the decoder inputs.",
                hint="build feeds with trt_pipeline.compare.data (it adds the reference-only inputs).",
            )
        use_torch = any(isinstance(v, torch.Tensor) for v in feed_dict.values())
        model = self.model
        language_model = model.model.language_model
        embeds = torch.as_tensor(feed_dict["inputs_embeds"]).float()
        mask = torch.as_tensor(feed_dict["attention_mask"]).long()
        positions = torch.as_tensor(feed_dict["position_ids"]).long()
        if self.check_rope and "rope_cos" in feed_dict:
            self._verify_rope(language_model, embeds, positions, feed_dict)
        layout = self.kv_layout
        cached = mask.shape[1] - embeds.shape[1]  # positions before the segment (either layout)

        def heads(name: str) -> torch.Tensor:  # [B, kv, cached, D]; an inplace cache's free rows left out
            return layout.to_heads(layout.rows(torch.as_tensor(feed_dict[name]).float(), 0, cached))

        past = [(heads(f"past_key_values.{i}.key"), heads(f"past_key_values.{i}.value")) for i in range(self.num_layers)]
        if past and cached > 0:
            cache = DynamicCache(ddp_cache_data=past, config=model.config)
        else:
            cache = DynamicCache(config=model.config)
        start = time.perf_counter()
        out = language_model(
            inputs_embeds=embeds, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True
        )
        hidden = out.last_hidden_state
        if "logits_positions" in feed_dict:  # the LM head only where the exported decoder computes it
            hidden = hidden[:, torch.as_tensor(feed_dict["logits_positions"]).long()]
        logits = model.lm_head(hidden)
        self.inference_time = time.perf_counter() - start
        result = OrderedDict(logits=self._to_result(logits, use_torch))
        for i, layer in enumerate(out.past_key_values.layers):
            result[f"present.{i}.key"] = self._to_result(layout.from_heads(layer.keys), use_torch)
            result[f"present.{i}.value"] = self._to_result(layout.from_heads(layer.values), use_torch)
        return result

    def _verify_rope(self, language_model: Any, embeds: torch.Tensor, positions: torch.Tensor, feed: dict[str, Any]) -> None:
        cos, sin = language_model.rotary_emb(embeds, positions)
        for name, expected in (("rope_cos", cos), ("rope_sin", sin)):
            fed = torch.as_tensor(feed[name]).float()
            if fed.shape != expected.shape:
                raise ShapeError(
                    f"{self.name}: fed `{name}` has shape {tuple(fed.shape)}, transformers' rotary for the fed "
                    f"position_ids has {tuple(expected.shape)}."
                )
            error = float((fed - expected.float()).abs().max()) if fed.numel() else 0.0
            if error > ROPE_ATOL:
                raise AccuracyError(
                    f"{self.name}: fed `{name}` differs from transformers' Glm4vTextRotaryEmbedding for the fed "
                    f"position_ids by {error:.3g} (> {ROPE_ATOL:g}): the host M-RoPE tables "
                    "(trt_pipeline.models.glm4v.host.text_rope) and the reference disagree.",
                    hint="the feed is inconsistent; rebuild it with host.rope_index + host.text_rope.",
                )


def transformers_component_runners(
    reference: TransformersReference | Any | Path | str, *, prefix: str = "transformers", kv_cache: str = "concat",
) -> tuple[TransformersVisionRunner, TransformersDecoderRunner]:
    """(vision, decoder) reference runners over one shared model (a checkpoint path, model or holder);
    the decoder's cache arrays in the ``kv_cache`` layout of the export it is compared with."""
    if isinstance(reference, (str, Path)):
        reference = TransformersReference(reference)
    reference = _as_reference(reference)
    return (
        TransformersVisionRunner(reference, name=f"{prefix}:vision_encoder"),
        TransformersDecoderRunner(reference, name=f"{prefix}:decoder", kv_cache=kv_cache),
    )



__all__ = [
    "REFERENCE_INPUTS",
    "TransformersDecoderRunner",
    "TransformersReference",
    "TransformersVisionRunner",
    "load_reference_model",
    "transformers_component_runners",
]
