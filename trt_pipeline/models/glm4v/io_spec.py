"""Declared inputs/outputs of the exported components (the role of Optimum's ``OnnxConfig``).

One table per component names every tensor, its dtype and its shape in symbolic axis names.
Export uses it for ``dynamic_shapes``/names, runners for input metadata, the engine builder
(through export.json) for optimization profiles, and the calibration reader for shapes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from trt_pipeline.models.glm4v.config import Glm4vDims

Dim = int | str


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name: float32, int64
    shape: tuple[Dim, ...]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["shape"] = list(self.shape)
        return data


@dataclass(frozen=True)
class ComponentSpec:
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
        }


VISION = "vision_encoder"
DECODER = "decoder"
#: Decoder input selecting the positions the LM head runs on (see ``TextDecoder``) and its axis.
LOGITS_POSITIONS = "logits_positions"
NUM_LOGITS = "num_logits"


def past_names(num_layers: int) -> list[str]:
    return [f"past_key_values.{i}.{kind}" for i in range(num_layers) for kind in ("key", "value")]


def present_names(num_layers: int) -> list[str]:
    return [f"present.{i}.{kind}" for i in range(num_layers) for kind in ("key", "value")]


def vision_spec(dims: Glm4vDims, dtype: str = "float32") -> ComponentSpec:
    """One image per call (full attention, no mask input): every input is linear in ``num_patches``.

    Host tables stay float32 (computed in fp32 as transformers does); features are ``dtype``.
    """
    v = dims.vision
    n = "num_patches"
    return ComponentSpec(
        VISION,
        inputs=(
            TensorSpec("pixel_values", "float32", (n, v.patch_dim)),
            TensorSpec("rotary_cos", "float32", (n, v.head_dim)),
            TensorSpec("rotary_sin", "float32", (n, v.head_dim)),
            TensorSpec("position_embeddings", "float32", (n, v.hidden_size)),
        ),
        outputs=(TensorSpec("image_features", dtype, ("num_image_tokens", v.out_hidden_size)),),
    )


def decoder_spec(dims: Glm4vDims, dtype: str = "float32") -> ComponentSpec:
    """Embeddings, KV cache and logits in the export ``dtype``; mask and rotary tables as the host makes them."""
    t = dims.text
    b, s, p, total = "batch_size", "sequence_length", "past_sequence_length", "total_sequence_length"
    kv = (t.num_key_value_heads, t.head_dim)
    past = tuple(TensorSpec(name, dtype, (b, kv[0], p, kv[1])) for name in past_names(t.num_hidden_layers))
    present = tuple(
        TensorSpec(name, dtype, (b, kv[0], total, kv[1])) for name in present_names(t.num_hidden_layers)
    )
    return ComponentSpec(
        DECODER,
        inputs=(
            TensorSpec("inputs_embeds", dtype, (b, s, t.hidden_size)),
            TensorSpec("attention_mask", "int64", (b, total)),
            TensorSpec("rope_cos", "float32", (b, s, t.rotary_dim)),
            TensorSpec("rope_sin", "float32", (b, s, t.rotary_dim)),
            TensorSpec(LOGITS_POSITIONS, "int64", (NUM_LOGITS,)),
            *past,
        ),
        outputs=(TensorSpec("logits", dtype, (b, NUM_LOGITS, t.vocab_size)), *present),
    )


COMPONENT_SPECS = {VISION: vision_spec, DECODER: decoder_spec}


def component_spec(dims: Glm4vDims, component: str, dtype: str = "float32") -> ComponentSpec:
    """The I/O table of ``component`` for an export in ``dtype`` (torch dtype name)."""
    return COMPONENT_SPECS[component](dims, dtype)
