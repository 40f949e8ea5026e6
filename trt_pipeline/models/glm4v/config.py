"""Typed view of a GLM-4.1V ``config.json``: the one parser of it in the package.

``info``, ``export``, loading and the host helpers all read the checkpoint's dims through
:func:`load_dims`, so they accept and refuse the same files. Before any value is used the file
is checked against transformers' own schema (``Glm4vTextConfig`` / ``Glm4vVisionConfig`` /
``Glm4vConfig``, strict dataclasses: a size given as a string is refused) and every size must
be a positive integer; the keys that fix the model's size have no default (a config without
``hidden_size`` is an error, never a silent 9B). A config of another architecture is refused
with a clear :class:`~trt_pipeline.errors.CheckpointError` before any weight is touched.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from trt_pipeline.errors import CheckpointError

SUPPORTED_MODEL_TYPES = ("glm4v",)


#: config.json token-id field -> the special token it names in GLM-4.1V's tokenizer
SPECIAL_TOKEN_FIELDS: dict[str, str] = {
    "image_token_id": "<|image|>",
    "video_token_id": "<|video|>",
    "image_start_token_id": "<|begin_of_image|>",
    "image_end_token_id": "<|end_of_image|>",
    "video_start_token_id": "<|begin_of_video|>",
    "video_end_token_id": "<|end_of_video|>",
}

@dataclass(frozen=True)
class TextDims:
    """Text decoder dimensions (``text_config``)."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    rms_norm_eps: float
    rope_theta: float
    partial_rotary_factor: float
    mrope_section: tuple[int, ...]
    max_position_embeddings: int
    hidden_act: str = "silu"

    @property
    def head_dim(self) -> int:
        # transformers' Glm4vTextAttention uses hidden_size // num_heads (it ignores config.head_dim).
        return self.hidden_size // self.num_attention_heads

    @property
    def rotary_dim(self) -> int:
        return int(self.head_dim * self.partial_rotary_factor)


@dataclass(frozen=True)
class VisionDims:
    """Vision tower dimensions (``vision_config``)."""

    depth: int
    hidden_size: int
    num_heads: int
    in_channels: int
    patch_size: int
    temporal_patch_size: int
    spatial_merge_size: int
    out_hidden_size: int
    intermediate_size: int
    image_size: int
    rms_norm_eps: float
    rope_theta: float
    hidden_act: str = "silu"
    attention_bias: bool = False

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def patch_dim(self) -> int:
        """Length of one flattened patch: C * temporal_patch * patch * patch (1176 for GLM-4.1V)."""
        return self.in_channels * self.temporal_patch_size * self.patch_size * self.patch_size

    @property
    def position_grid(self) -> int:
        """Side of the learned position table (image_size // patch_size; 24 for GLM-4.1V)."""
        return self.image_size // self.patch_size


@dataclass(frozen=True)
class Glm4vDims:
    """Everything the export-friendly model and the host helpers need from ``config.json``."""

    text: TextDims
    vision: VisionDims
    image_token_id: int
    video_token_id: int
    image_start_token_id: int
    image_end_token_id: int
    tie_word_embeddings: bool
    torch_dtype: str | None
    raw: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("raw")
        return data


def _rope(cfg: dict[str, Any]) -> dict[str, Any]:
    rope = dict(cfg.get("rope_parameters") or cfg.get("rope_scaling") or {})
    if "rope_theta" not in rope and "rope_theta" in cfg:
        rope["rope_theta"] = cfg["rope_theta"]
    if "partial_rotary_factor" not in rope and "partial_rotary_factor" in cfg:
        rope["partial_rotary_factor"] = cfg["partial_rotary_factor"]
    return rope


def _require(cfg: dict[str, Any], key: str, path: Path, section: str) -> Any:
    if key not in cfg:
        raise CheckpointError(
            f"{path}: `{section}.{key}` is missing; a GLM-4.1V config.json declares it.",
            path=path,
            hint="re-download config.json or re-create the checkpoint with `autoglm-trt init-checkpoint`.",
        )
    return cfg[key]


def dims_from_dict(raw: dict[str, Any], path: Path) -> Glm4vDims:
    """Build :class:`Glm4vDims` from a parsed config.json, refusing other architectures.

    A value the schema check lets through but that is not a number where one is read (a null
    ``mrope_section``, an infinite ``rope_theta``, a list for ``rope_parameters``) is a
    :class:`CheckpointError` naming the file, not a TypeError traceback.
    """
    try:
        return _dims_from_dict(raw, path)
    except (TypeError, ValueError, OverflowError, AttributeError) as error:
        raise CheckpointError(
            f"{path}: a value has the wrong type for GLM-4.1V ({type(error).__name__}: {error}).",
            path=path,
            hint="compare config.json with one written by transformers' save_pretrained and fix that value.",
        ) from None


def _dims_from_dict(raw: dict[str, Any], path: Path) -> Glm4vDims:
    model_type = raw.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise CheckpointError(
            f"{path}: model_type is {model_type!r}, expected one of {SUPPORTED_MODEL_TYPES} "
            "(GLM-4.1V / AutoGLM-Phone-9B, Glm4vForConditionalGeneration).",
            path=path,
            hint="point the command at an AutoGLM-Phone-9B / GLM-4.1V checkpoint folder.",
        )
    architectures = raw.get("architectures")
    if architectures is not None and not (isinstance(architectures, list) and all(isinstance(a, str) for a in architectures)):
        raise CheckpointError(f"{path}: `architectures` must be a list of class names, got {architectures!r}.", path=path,
                              hint='GLM-4.1V writes ["Glm4vForConditionalGeneration"].')
    text = raw.get("text_config") or {}
    vision = raw.get("vision_config") or {}
    if not isinstance(text, dict) or not isinstance(vision, dict) or not text or not vision:
        raise CheckpointError(
            f"{path}: config.json lacks `text_config` or `vision_config`.",
            path=path,
            hint="a Glm4vConfig has both sub-configs; re-create it with transformers' save_pretrained.",
        )
    check_schema(raw, path)
    t_rope = _rope(text)
    v_rope = _rope(vision)
    text_dims = TextDims(
        vocab_size=int(_require(text, "vocab_size", path, "text_config")),
        hidden_size=int(_require(text, "hidden_size", path, "text_config")),
        intermediate_size=int(_require(text, "intermediate_size", path, "text_config")),
        num_hidden_layers=int(_require(text, "num_hidden_layers", path, "text_config")),
        num_attention_heads=int(_require(text, "num_attention_heads", path, "text_config")),
        num_key_value_heads=int(text.get("num_key_value_heads") or text["num_attention_heads"]),
        rms_norm_eps=float(text.get("rms_norm_eps", 1e-5)),
        rope_theta=float(t_rope.get("rope_theta", 10000.0)),
        partial_rotary_factor=float(t_rope.get("partial_rotary_factor", 1.0)),
        mrope_section=tuple(int(x) for x in t_rope.get("mrope_section", (8, 12, 12))),
        max_position_embeddings=int(text.get("max_position_embeddings", 32768)),
        hidden_act=str(text.get("hidden_act", "silu")),
    )
    vision_dims = VisionDims(
        depth=int(_require(vision, "depth", path, "vision_config")),
        hidden_size=int(_require(vision, "hidden_size", path, "vision_config")),
        num_heads=int(_require(vision, "num_heads", path, "vision_config")),
        in_channels=int(vision.get("in_channels", 3)),
        patch_size=int(vision.get("patch_size", 14)),
        temporal_patch_size=int(vision.get("temporal_patch_size", 2)),
        spatial_merge_size=int(vision.get("spatial_merge_size", 2)),
        out_hidden_size=int(_require(vision, "out_hidden_size", path, "vision_config")),
        intermediate_size=int(_require(vision, "intermediate_size", path, "vision_config")),
        image_size=int(vision.get("image_size", 336)),
        rms_norm_eps=float(vision.get("rms_norm_eps", 1e-5)),
        rope_theta=float(v_rope.get("rope_theta", 10000.0)),
        hidden_act=str(vision.get("hidden_act", "silu")),
        attention_bias=bool(vision.get("attention_bias", False)),
    )
    _check_consistency(text_dims, vision_dims, path)
    return Glm4vDims(
        text=text_dims,
        vision=vision_dims,
        image_token_id=int(raw.get("image_token_id", 151343)),
        video_token_id=int(raw.get("video_token_id", 151344)),
        image_start_token_id=int(raw.get("image_start_token_id", 151339)),
        image_end_token_id=int(raw.get("image_end_token_id", 151340)),
        tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
        torch_dtype=raw.get("dtype") or raw.get("torch_dtype") or text.get("dtype"),
        raw=raw,
    )


#: sizes that must be positive integers (a zero or negative one makes every count meaningless)
POSITIVE_SIZES: dict[str, tuple[str, ...]] = {
    "text_config": (
        "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "max_position_embeddings",
    ),
    "vision_config": (
        "depth", "hidden_size", "num_heads", "in_channels", "patch_size", "temporal_patch_size",
        "spatial_merge_size", "out_hidden_size", "intermediate_size", "image_size",
    ),
}
_SCHEMA_FIELD = re.compile(r"field '(\w+)'")
_SUB_CONFIGS = ("text_config", "vision_config")


def check_schema(raw: dict[str, Any], path: Path) -> None:
    """Refuse sizes that are not positive integers, then values of the wrong type (transformers' schema).

    Sizes first, so transformers never sees (and warns about) a negative vocabulary. The error
    names the key (``text_config.hidden_size``) and the file, so a hand-edited config.json fails
    here and not as a traceback deep inside the exporter.
    """
    for section, keys in POSITIVE_SIZES.items():
        for key in keys:
            value = raw[section].get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
                raise CheckpointError(
                    f"{path}: `{section}.{key}` must be a positive integer, got {value!r}.",
                    path=path,
                    hint="fix that size in config.json; it must match the shapes of the weights.",
                )

    from transformers.models.glm4v.configuration_glm4v import Glm4vConfig, Glm4vTextConfig, Glm4vVisionConfig

    top = {k: v for k, v in raw.items() if k not in _SUB_CONFIGS}
    checks = (("text_config", Glm4vTextConfig, raw["text_config"]),
              ("vision_config", Glm4vVisionConfig, raw["vision_config"]), ("", Glm4vConfig, top))
    for section, schema, values in checks:
        try:
            schema(**values)
        except Exception as error:  # noqa: BLE001 - any schema rejection becomes a CheckpointError
            match = _SCHEMA_FIELD.search(str(error))
            key = ".".join(filter(None, (section, match.group(1) if match else "")))
            reason = str(error.__cause__ or error).strip().splitlines()[-1].strip()
            raise CheckpointError(
                f"{path}: `{key or section or 'config'}` is invalid for GLM-4.1V ({reason}).",
                path=path,
                hint="fix that value in config.json (transformers' Glm4vConfig defines its type).",
            ) from None


def _check_consistency(text: TextDims, vision: VisionDims, path: Path) -> None:
    problems = []
    if text.hidden_size % text.num_attention_heads:
        problems.append("text hidden_size is not divisible by num_attention_heads")
    if text.num_attention_heads % text.num_key_value_heads:
        problems.append("text num_attention_heads is not a multiple of num_key_value_heads")
    if sum(text.mrope_section) * 2 != text.rotary_dim:
        problems.append(
            f"mrope_section {list(text.mrope_section)} sums to {sum(text.mrope_section)}, "
            f"expected rotary_dim/2 = {text.rotary_dim // 2}"
        )
    if vision.hidden_size % vision.num_heads:
        problems.append("vision hidden_size is not divisible by num_heads")
    if vision.out_hidden_size != text.hidden_size:
        problems.append(
            f"vision out_hidden_size {vision.out_hidden_size} != text hidden_size {text.hidden_size}"
        )
    if problems:
        raise CheckpointError(
            f"{path}: inconsistent GLM-4.1V config: " + "; ".join(problems) + ".",
            path=path,
            hint="fix config.json so that its dims match the weights.",
        )


def read_config_json(checkpoint: Path | str) -> tuple[Path, dict[str, Any]]:
    """``(config path, parsed JSON)`` of a checkpoint folder (or a config.json path), with clear errors."""
    checkpoint = Path(checkpoint)
    if not checkpoint.exists():
        raise CheckpointError(
            f"checkpoint folder {checkpoint} does not exist.",
            path=checkpoint,
            hint="pass a Hugging Face checkpoint folder, or make one with `autoglm-trt init-checkpoint --preset tiny --out DIR`.",
        )
    config_path = checkpoint / "config.json" if checkpoint.is_dir() else checkpoint
    if not config_path.is_file():
        raise CheckpointError(
            f"{config_path} not found: a checkpoint folder holds config.json and *.safetensors.",
            path=config_path,
            hint="pass the folder written by save_pretrained / downloaded from the Hub.",
        )
    try:
        raw = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(
            f"{config_path} is not valid JSON ({error}).", path=config_path, hint="re-download config.json."
        ) from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{config_path} does not hold a JSON object.", path=config_path)
    return config_path, raw


def load_dims(checkpoint: Path | str) -> Glm4vDims:
    """Read and validate ``CHECKPOINT/config.json``."""
    config_path, raw = read_config_json(checkpoint)
    return dims_from_dict(raw, config_path)
