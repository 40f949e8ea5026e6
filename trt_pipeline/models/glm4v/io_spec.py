"""Declared inputs/outputs of the exported components (the role of Optimum's ``OnnxConfig``).

One table per component names every tensor, its dtype and its shape in symbolic axis names.
Export uses it for ``dynamic_shapes``/names, runners for input metadata, the engine builder
(through export.json) for optimization profiles, and the calibration reader for shapes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from trt_pipeline.models.glm4v.config import Glm4vDims
from trt_pipeline.models.glm4v.decoder_ops import KV_CACHES

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


@dataclass(frozen=True)
class KvLayout:
    """Where the sequence axis of one KV-cache array is, and how to make, cut and convert such arrays.

    The single place that knows the :data:`KV_CACHES` layouts, so hosts (stepper, server,
    calibration, comparison) slice and grow caches without spelling axis numbers.
    """

    kind: str
    kv_heads: int
    head_dim: int

    def __post_init__(self) -> None:
        if self.kind not in KV_CACHES:
            raise ValueError(f"KV cache {self.kind!r}: choose one of {', '.join(KV_CACHES)}")

    @classmethod
    def of(cls, dims: Glm4vDims, kind: str = "concat") -> KvLayout:
        return cls(kind, dims.text.num_key_value_heads, dims.text.head_dim)

    @property
    def inplace(self) -> bool:
        """Whether the graph writes the new rows into the fed cache (``inplace``, ``shared``): the cache input
        then already spans the new positions and ``present.*`` has its shape."""
        return self.kind != "concat"

    @property
    def sequence_major(self) -> bool:
        """``[B, T, kv * D]`` (``inplace``) rather than transformers' ``[B, kv, T, D]`` (``concat``, ``shared``)."""
        return self.kind == "inplace"

    @property
    def seq_axis(self) -> int:
        """The axis of cached positions: 1 of ``[B, T, kv * D]`` (inplace), 2 of ``[B, kv, T, D]`` (concat, shared)."""
        return 1 if self.sequence_major else 2

    def shape(self, batch: int, length: int) -> tuple[int, ...]:
        if self.sequence_major:
            return (batch, length, self.kv_heads * self.head_dim)
        return (batch, self.kv_heads, length, self.head_dim)

    def symbolic(self, length_axis: str) -> tuple[Dim, ...]:
        return self.shape("batch_size", length_axis)  # type: ignore[arg-type]

    def length(self, array: Any) -> int:
        return int(array.shape[self.seq_axis])

    def rows(self, array: Any, start: int | None = None, stop: int | None = None) -> Any:
        """The view of positions ``start:stop`` (numpy or torch)."""
        index = (slice(None),) * self.seq_axis + (slice(start, stop),)
        return array[index]

    def to_heads(self, array: Any) -> Any:
        """``[B, kv, T, D]`` (transformers' cache layout) of an array in this layout (numpy or torch; a view)."""
        if not self.sequence_major:
            return array
        heads = array.reshape(array.shape[0], array.shape[1], self.kv_heads, self.head_dim)
        return heads.permute(0, 2, 1, 3) if hasattr(heads, "permute") else heads.transpose(0, 2, 1, 3)

    def from_heads(self, array: Any) -> Any:
        """This layout of a ``[B, kv, T, D]`` array (numpy or torch; a C-contiguous copy for inplace)."""
        if not self.sequence_major:
            return array
        batch, _, length, _ = array.shape
        moved = array.permute(0, 2, 1, 3) if hasattr(array, "permute") else array.transpose(0, 2, 1, 3)
        return moved.reshape(batch, length, self.kv_heads * self.head_dim)


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


def decoder_spec(dims: Glm4vDims, dtype: str = "float32", kv_cache: str = "concat") -> ComponentSpec:
    """Embeddings, KV cache and logits in the export ``dtype``; mask and rotary tables as the host makes them.

    ``kv_cache`` (:data:`KV_CACHES`): an ``inplace`` / ``shared`` cache input already spans the new
    positions (``total_sequence_length``) and has the output's shape."""
    t = dims.text
    b, s, p, total = "batch_size", "sequence_length", "past_sequence_length", "total_sequence_length"
    layout = KvLayout.of(dims, kv_cache)
    past_axis = total if layout.inplace else p
    past = tuple(TensorSpec(name, dtype, layout.symbolic(past_axis)) for name in past_names(t.num_hidden_layers))
    present = tuple(TensorSpec(name, dtype, layout.symbolic(total)) for name in present_names(t.num_hidden_layers))
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


def component_spec(dims: Glm4vDims, component: str, dtype: str = "float32", kv_cache: str = "concat") -> ComponentSpec:
    """The I/O table of ``component`` for an export in ``dtype`` (torch dtype name) and ``kv_cache``."""
    if component == VISION:
        return vision_spec(dims, dtype)
    if component == DECODER:
        return decoder_spec(dims, dtype, kv_cache)
    raise KeyError(component)
