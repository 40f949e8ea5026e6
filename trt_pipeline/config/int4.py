"""``Int4Config``: options of ``autoglm-trt precision int4`` (weight-only INT4, ModelOpt AWQ / RTN)."""

from __future__ import annotations

from dataclasses import field
from pathlib import Path
from typing import Any

from pydantic.dataclasses import dataclass

from trt_pipeline.config.base import STAGE_CONFIG, to_dict
from trt_pipeline.config.stages import COMPONENTS, _check_at_least, _check_components, _check_decode
from trt_pipeline.errors import ConfigError
from trt_pipeline.precisions import check_precision

#: Precision a component can take inside ``onnx/int4`` (the vision tower stays fp16 by default).
INT4_COMPONENT_PRECISIONS = ("fp32", "fp16", "int4")
INT4_METHODS = ("awq", "awq-lite", "awq-clip", "rtn")
INT4_ACTIVATIONS = ("fp16", "fp32")
INT4_MIN_OPSET = 21
INT4_MIN_BLOCK_SIZE = 16
#: The field's block size (TensorRT-LLM, ModelOpt, AutoAWQ) for 4096-wide layers: 32 blocks per column.
INT4_FIELD_BLOCK_SIZE = 128
#: The automatic block size keeps at least this many blocks (scales) per weight column.
INT4_MIN_BLOCKS_PER_COLUMN = 8


def check_block_size(block_size: int) -> int:
    """A power of two >= 16 (ONNX Runtime's MatMulNBits needs it; TensorRT takes any divisor of K)."""
    if block_size < INT4_MIN_BLOCK_SIZE or block_size & (block_size - 1):
        raise ConfigError(f"--block-size {block_size} must be a power of two >= {INT4_MIN_BLOCK_SIZE} "
                          "(e.g. 32, 64, 128).")
    return block_size


def check_opset(opset: int) -> int:
    """INT4 weights are DequantizeLinear with ``block_size``: opset 21 or newer."""
    if opset < INT4_MIN_OPSET:
        raise ConfigError(
            f"--opset {opset} is below {INT4_MIN_OPSET}: INT4 weights need DequantizeLinear with block_size "
            f"(opset {INT4_MIN_OPSET}).", hint=f"pass --opset {INT4_MIN_OPSET} or higher.")
    return opset


@dataclass(frozen=True, config=STAGE_CONFIG)
class Int4Config:
    """Options of ``autoglm-trt precision int4``.

    ``method``: ``awq`` (ModelOpt ``awq_full``: the AWQ paper's activation-aware scale search, then its
    weight-clipping search; falls back to ``rtn`` with the reason recorded when it cannot run),
    ``awq-lite`` (the scale search alone), ``awq-clip`` (the clipping search alone) or ``rtn``.
    ``block_size``: rows of a weight sharing one scale (power of two >= 16 dividing every K); None
    (default) picks it from the weights' dims
    (:func:`~trt_pipeline.quantize.int4.auto_block_size`: 128, unless the narrowest quantized
    matrix would get fewer than 8 blocks per column).
    ``activations``: ``fp16`` (TensorRT, strongly typed) or ``fp32`` (ONNX Runtime CPU, where the
    int4 MatMuls fuse into ``MatMulNBits``). ``opset``: >= 21 (block-quantized DequantizeLinear);
    a lower export is upgraded and checked. ``components`` maps each component to ``int4`` / ``fp16``
    / ``fp32`` inside ``onnx/int4``. Gates: the gate table's int4 rows (``min_cosine`` overrides).
    """

    calib: Path | None = None
    method: str = "awq"
    block_size: int | None = None
    activations: str = "fp16"
    quantize_lm_head: bool = False
    nodes_to_exclude: tuple[str, ...] = ()
    opset: int = INT4_MIN_OPSET
    calib_samples: int | None = 16
    heldout_samples: int | None = 8
    components: dict[str, str] = field(default_factory=lambda: {"vision_encoder": "fp16", "decoder": "int4"})
    decode_steps: int = 1
    max_new_tokens: int = 8
    min_cosine: float | None = None
    evaluate: bool = True

    def __post_init__(self) -> None:
        _check_components(self.components)
        for component, precision in self.components.items():
            check_precision(precision, INT4_COMPONENT_PRECISIONS, option=f"{component} precision in the int4 folder")
        object.__setattr__(self, "components", {c: self.components[c] for c in COMPONENTS if c in self.components})
        if self.method not in INT4_METHODS:
            raise ConfigError(f"unknown --method {self.method!r}; choose from {', '.join(INT4_METHODS)}.")
        if self.activations not in INT4_ACTIVATIONS:
            raise ConfigError(f"unknown --activations {self.activations!r}; choose from {', '.join(INT4_ACTIVATIONS)}.")
        if self.block_size is not None:
            check_block_size(self.block_size)
        check_opset(self.opset)
        _check_at_least(self, 1, "calib_samples", "heldout_samples")
        _check_decode(self)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)
