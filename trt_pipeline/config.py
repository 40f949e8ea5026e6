"""Frozen per-stage configurations.

A pipeline TOML file (``pipeline.toml``) maps section by section onto these dataclasses
(:func:`load_pipeline_toml`); CLI options build the same objects. Stages receive only their own
config, and the config's JSON form is hashed into the stage manifest so an unchanged stage can
be skipped.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from trt_pipeline.errors import ConfigError

COMPONENTS = ("vision_encoder", "decoder")


@dataclass(frozen=True)
class DimRange:
    """min/opt/max of one symbolic axis (these become TensorRT optimization profiles)."""

    min: int
    opt: int
    max: int

    def __post_init__(self) -> None:
        if not (0 <= self.min <= self.opt <= self.max):
            raise ConfigError(f"invalid range min={self.min} opt={self.opt} max={self.max}: need 0 <= min <= opt <= max.")

    def grid(self) -> list[int]:
        """min, an interior value and max (deduplicated): the validation grid of one axis."""
        interior = (self.min + self.max) // 2 if self.max - self.min > 1 else self.opt
        return sorted({self.min, interior, self.max})


@dataclass(frozen=True)
class ExportConfig:
    """Options of ``autoglm-trt export``."""

    opset: int = 18
    components: tuple[str, ...] = COMPONENTS
    max_batch: int = 4
    max_seq: int = 256
    max_kv: int = 512
    min_image_tokens: int = 4
    max_image_tokens: int | None = None  # None: from the checkpoint's image-processor config
    external_data: bool | None = None  # None: automatic above 2 GB
    simplify: bool = True
    validate: bool = True
    dtype: str = "float32"
    atol_logits: float = 1e-4
    atol_vision: float = 1e-5

    def __post_init__(self) -> None:
        unknown = [c for c in self.components if c not in COMPONENTS]
        if unknown or not self.components:
            raise ConfigError(f"unknown component(s) {unknown}; choose from {list(COMPONENTS)}.")
        if self.opset < 17:
            raise ConfigError(f"opset {self.opset} is too old: LayerNormalization needs opset >= 17.")
        for name in ("max_batch", "max_seq", "min_image_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}.")
        if self.max_kv < 1:
            raise ConfigError(f"--max-kv must be >= 1, got {self.max_kv}.")
        if self.max_image_tokens is not None and self.max_image_tokens < self.min_image_tokens:
            raise ConfigError(
                f"--max-image-tokens {self.max_image_tokens} < --min-image-tokens {self.min_image_tokens}."
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class SimplifyConfig:
    """Options of ``autoglm-trt simplify``."""

    check_n: int = 2
    atol: float = 1e-5
    skip_above_bytes: int = 2 * 1024**3 - 1024**2

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ValidateConfig:
    """Options of ``autoglm-trt validate``: tolerances of ONNX Runtime vs transformers."""

    precision: str = "fp32"
    atol_logits: float = 1e-4
    atol_vision: float = 1e-5
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
