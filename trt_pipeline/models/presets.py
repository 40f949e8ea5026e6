"""Model size presets for GLM-4.1V (AutoGLM-Phone-9B) and the configs built from them.

Three presets share one architecture (``transformers.Glm4vConfig`` /
``Glm4vForConditionalGeneration``) and differ only in size:

``tiny``
    A few MB, for unit tests: text hidden 128 x 2 layers, vision 64 x 2 blocks, 112 px position
    table (8 x 8), at most 256 patches (64 image tokens) per image.
``small``
    About 110 M parameters, for CPU benchmarks: text hidden 768 x 12 layers, vision 384 x 6 blocks.
``phone-9b``
    The real AutoGLM-Phone-9B / GLM-4.1V-9B dimensions, real vocabulary (151552) and real special
    token ids. Config-only by default (its bf16 weights are ~20 GB).

Every preset keeps the structural ratios of the real model that matter to the export code:
GQA (2 KV heads), ``partial_rotary_factor`` 0.5 with an M-RoPE section that covers the rotary
half, q/k/v bias, patch 14 / temporal 2 / merge 2, learned square position table.

This module imports neither torch nor transformers at import time; :func:`build_config` imports
transformers lazily.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from trt_pipeline.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from transformers import Glm4vConfig

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

#: dtypes a checkpoint can be written in (name -> bytes per element)
DTYPES: dict[str, int] = {"float32": 4, "float16": 2, "bfloat16": 2}


def _frozen(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True, eq=True)
class Preset:
    """One model size.

    Attributes:
        name: registry key (``tiny``, ``small``, ``phone-9b``).
        description: one line for ``--help`` and ``info``.
        text: ``Glm4vTextConfig`` fields plus the flat rope fields ``rope_theta``,
            ``partial_rotary_factor`` and ``mrope_section`` (assembled into ``rope_parameters``).
            ``vocab_size`` ``None`` means "from the generated tokenizer" (padded, see ``tokenizer``).
        vision: ``Glm4vVisionConfig`` fields; ``out_hidden_size`` ``None`` means the text hidden size.
        image_processor: ``min_pixels`` / ``max_pixels`` (``size.shortest_edge`` / ``longest_edge`` of
            ``Glm4vImageProcessorPil``, compared against ``temporal_patch_size * h * w``), patch sizes,
            mean and std.
        config_only_default: whether ``init-checkpoint`` writes no weights unless asked to.
        tokenizer: how the tokenizer is made: ``bpe_vocab_size`` (BPE training target),
            ``pad_vocab_to_multiple_of`` (embedding rows), ``special_tokens_start`` (fill the regular
            vocabulary with reserved entries up to this id so the special tokens get the real ids).
        default_dtype: dtype used when none is given.
    """

    name: str
    description: str
    text: Mapping[str, Any]
    vision: Mapping[str, Any]
    image_processor: Mapping[str, Any]
    config_only_default: bool
    tokenizer: Mapping[str, Any] = field(default_factory=dict)
    default_dtype: str = "float32"

    def __post_init__(self) -> None:
        for name in ("text", "vision", "image_processor", "tokenizer"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))

    def __hash__(self) -> int:
        return hash(self.name)

    @property
    def max_image_patches(self) -> int:
        """Patches of the largest image the image processor produces (``max_pixels`` bound)."""
        ip = self.image_processor
        return ip["max_pixels"] // (ip["temporal_patch_size"] * ip["patch_size"] ** 2)

    @property
    def max_image_tokens(self) -> int:
        return self.max_image_patches // self.image_processor["merge_size"] ** 2


def _image_processor(min_pixels: int, max_pixels: int) -> dict[str, Any]:
    return {
        "min_pixels": min_pixels,
        "max_pixels": max_pixels,
        "patch_size": 14,
        "temporal_patch_size": 2,
        "merge_size": 2,
        "image_mean": list(OPENAI_CLIP_MEAN),
        "image_std": list(OPENAI_CLIP_STD),
    }


def _max_pixels_for_patches(patches: int, patch: int = 14, temporal: int = 2) -> int:
    # smart_resize compares t_bar * h * w with max_pixels, t_bar = temporal_patch_size for images
    return temporal * patches * patch * patch


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        name="tiny",
        description="~1.3 M parameters, a few MB: unit tests",
        text={
            "vocab_size": None,
            "hidden_size": 128,
            "intermediate_size": 256,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 4096,
            "rms_norm_eps": 1e-5,
            "initializer_range": 0.05,
            "rope_theta": 10000.0,
            "partial_rotary_factor": 0.5,
            "mrope_section": [2, 3, 3],
        },
        vision={
            "depth": 2,
            "hidden_size": 64,
            "num_heads": 4,
            "patch_size": 14,
            "temporal_patch_size": 2,
            "spatial_merge_size": 2,
            "out_hidden_size": None,
            "intermediate_size": 128,
            "image_size": 112,
            "rms_norm_eps": 1e-5,
            "initializer_range": 0.05,
        },
        image_processor=_image_processor(112 * 112, _max_pixels_for_patches(256)),
        config_only_default=False,
        tokenizer={"bpe_vocab_size": 3000, "pad_vocab_to_multiple_of": 64},
    ),
    "small": Preset(
        name="small",
        description="~110 M parameters: CPU benchmarks",
        text={
            "vocab_size": None,
            "hidden_size": 768,
            "intermediate_size": 2560,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "num_key_value_heads": 2,
            "max_position_embeddings": 8192,
            "rms_norm_eps": 1e-5,
            "initializer_range": 0.02,
            "rope_theta": 10000.0,
            "partial_rotary_factor": 0.5,
            "mrope_section": [4, 6, 6],
        },
        vision={
            "depth": 6,
            "hidden_size": 384,
            "num_heads": 6,
            "patch_size": 14,
            "temporal_patch_size": 2,
            "spatial_merge_size": 2,
            "out_hidden_size": None,
            "intermediate_size": 2560,
            "image_size": 336,
            "rms_norm_eps": 1e-5,
            "initializer_range": 0.02,
        },
        image_processor=_image_processor(112 * 112, _max_pixels_for_patches(1024)),
        config_only_default=False,
        tokenizer={"bpe_vocab_size": 3000, "pad_vocab_to_multiple_of": 64},
    ),
    "phone-9b": Preset(
        name="phone-9b",
        description="AutoGLM-Phone-9B / GLM-4.1V-9B real dimensions (~10.3 B parameters); config-only by default",
        text={
            "vocab_size": 151552,
            "hidden_size": 4096,
            "intermediate_size": 13696,
            "num_hidden_layers": 40,
            "num_attention_heads": 32,
            "num_key_value_heads": 2,
            "max_position_embeddings": 65536,
            "rms_norm_eps": 1e-5,
            "initializer_range": 0.02,
            "rope_theta": 10000.0,
            "partial_rotary_factor": 0.5,
            "mrope_section": [8, 12, 12],
        },
        vision={
            "depth": 24,
            "hidden_size": 1536,
            "num_heads": 12,
            "patch_size": 14,
            "temporal_patch_size": 2,
            "spatial_merge_size": 2,
            "out_hidden_size": 4096,
            "intermediate_size": 13696,
            "image_size": 336,
            "rms_norm_eps": 1e-5,
            "initializer_range": 0.02,
        },
        # zai-org GLM-4.1V / GLM-4.xV preprocessor_config.json
        image_processor=_image_processor(12544, 9633792),
        config_only_default=True,
        tokenizer={"bpe_vocab_size": 3000, "special_tokens_start": 151329},
        default_dtype="bfloat16",
    ),
}


def get_preset(name: str | Preset) -> Preset:
    """The preset called ``name`` (a :class:`Preset` is returned unchanged)."""
    if isinstance(name, Preset):
        return name
    try:
        return PRESETS[name]
    except (KeyError, TypeError):
        valid = ", ".join(PRESETS)
        raise ConfigError(
            f"unknown model preset {name!r}; valid presets: {valid}",
            hint=f"pass one of: {valid}",
        ) from None


# --- config building ---------------------------------------------------------------------------

_TEXT_ROPE_KEYS = ("rope_theta", "partial_rotary_factor", "mrope_section")
#: un-prefixed override names routed to the text or vision dict
_TEXT_ALIASES = set(_TEXT_ROPE_KEYS) | {"vocab_size", "max_position_embeddings"}
_VISION_ALIASES = {"image_size", "patch_size", "temporal_patch_size", "spatial_merge_size", "depth", "out_hidden_size"}
_TOP_LEVEL = {
    "image_token_id",
    "video_token_id",
    "image_start_token_id",
    "image_end_token_id",
    "video_start_token_id",
    "video_end_token_id",
    "tie_word_embeddings",
}
_TEXT_FIELDS = {
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "hidden_act",
    "max_position_embeddings",
    "initializer_range",
    "rms_norm_eps",
    "use_cache",
    "attention_dropout",
    "pad_token_id",
    "eos_token_id",
    *_TEXT_ROPE_KEYS,
}
_VISION_FIELDS = {
    "depth",
    "hidden_size",
    "hidden_act",
    "attention_bias",
    "attention_dropout",
    "num_heads",
    "in_channels",
    "image_size",
    "patch_size",
    "rms_norm_eps",
    "spatial_merge_size",
    "temporal_patch_size",
    "out_hidden_size",
    "intermediate_size",
    "initializer_range",
}

#: config attribute -> special token string (GLM-4.1V tokenizer)
CONFIG_TOKEN_FIELDS: dict[str, str] = {
    "image_token_id": "<|image|>",
    "video_token_id": "<|video|>",
    "image_start_token_id": "<|begin_of_image|>",
    "image_end_token_id": "<|end_of_image|>",
    "video_start_token_id": "<|begin_of_video|>",
    "video_end_token_id": "<|end_of_video|>",
}
#: GLM stops generation on any of these (generation_config.eos_token_id)
EOS_TOKENS: tuple[str, ...] = ("<|endoftext|>", "<|user|>", "<|observation|>")
PAD_TOKEN = "<|endoftext|>"


def split_overrides(overrides: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Route ``text_*``, ``vision_*`` and bare override names to (text, vision, top-level) dicts."""
    text: dict[str, Any] = {}
    vision: dict[str, Any] = {}
    top: dict[str, Any] = {}
    for key, value in overrides.items():
        if key.startswith("text_") and key[5:] in _TEXT_FIELDS:
            text[key[5:]] = value
        elif key.startswith("vision_") and key[7:] in _VISION_FIELDS:
            vision[key[7:]] = value
        elif key in _TEXT_ALIASES:
            text[key] = value
        elif key in _VISION_ALIASES:
            vision[key] = value
        elif key in _TOP_LEVEL:
            top[key] = value
        else:
            valid = sorted(
                [f"text_{k}" for k in _TEXT_FIELDS]
                + [f"vision_{k}" for k in _VISION_FIELDS]
                + sorted(_TEXT_ALIASES | _VISION_ALIASES | _TOP_LEVEL)
            )
            raise ConfigError(
                f"unknown config override {key!r}",
                hint="use text_<field>, vision_<field> or one of: " + ", ".join(valid),
            )
    return text, vision, top


def _validate(text: Mapping[str, Any], vision: Mapping[str, Any], where: str) -> None:
    def fail(message: str) -> None:
        raise ConfigError(f"{where}: {message}")

    hidden, heads, kv = text["hidden_size"], text["num_attention_heads"], text["num_key_value_heads"]
    if hidden % heads:
        fail(f"text hidden_size {hidden} is not divisible by num_attention_heads {heads}")
    if heads % kv:
        fail(f"num_attention_heads {heads} is not divisible by num_key_value_heads {kv}")
    head_dim = hidden // heads
    rotary = int(head_dim * text["partial_rotary_factor"])
    if rotary % 2 or rotary <= 0:
        fail(f"rotary dim {rotary} (head_dim {head_dim} x partial_rotary_factor) must be even and > 0")
    section = list(text["mrope_section"])
    if len(section) != 3 or sum(section) * 2 != rotary:
        fail(
            f"mrope_section {section} must have 3 entries summing to rotary_dim/2 = {rotary // 2} "
            f"(head_dim {head_dim} x partial_rotary_factor {text['partial_rotary_factor']})"
        )
    vh, vheads = vision["hidden_size"], vision["num_heads"]
    if vh % vheads:
        fail(f"vision hidden_size {vh} is not divisible by num_heads {vheads}")
    if (vh // vheads) % 4:
        fail(f"vision head_dim {vh // vheads} must be divisible by 4 (2-D axial rotary)")
    if vision["image_size"] % vision["patch_size"]:
        fail(f"vision image_size {vision['image_size']} is not a multiple of patch_size {vision['patch_size']}")
    if text["vocab_size"] is None or text["vocab_size"] <= 0:
        fail("text vocab_size is unknown; pass vocab_size= (e.g. from the tokenizer)")


def resolve_dims(
    preset: str | Preset,
    vocab_size: int | None = None,
    **overrides: Any,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Plain dicts (text, vision, top-level) after overrides; no transformers import."""
    p = get_preset(preset)
    text_o, vision_o, top = split_overrides(overrides)
    text = {**p.text, **text_o}
    vision = {**p.vision, **vision_o}
    if vocab_size is not None and "vocab_size" not in text_o:
        text["vocab_size"] = int(vocab_size)
    if vision.get("out_hidden_size") is None:
        vision["out_hidden_size"] = text["hidden_size"]
    _validate(text, vision, f"preset {p.name!r}")
    return text, vision, top


def build_config(
    preset: str | Preset,
    vocab_size: int | None = None,
    special_token_ids: Mapping[str, int] | None = None,
    **overrides: Any,
) -> Glm4vConfig:
    """A ``transformers.Glm4vConfig`` for ``preset``.

    Args:
        preset: preset name or :class:`Preset`.
        vocab_size: embedding rows; default: the preset's (``phone-9b``: 151552) or, for presets
            whose vocabulary comes from the generated tokenizer, that tokenizer's size padded as
            the preset says.
        special_token_ids: token string -> id (``<|image|>``, ``<|endoftext|>``, ...), as returned
            by :func:`trt_pipeline.models.tokenizer_factory.tokenizer_spec`; default: the
            preset's generated tokenizer.
        **overrides: ``text_<field>=...`` / ``vision_<field>=...`` for any config field, or the
            bare names ``mrope_section``, ``rope_theta``, ``partial_rotary_factor``, ``vocab_size``,
            ``max_position_embeddings``, ``image_size``, ``patch_size``, ``temporal_patch_size``,
            ``spatial_merge_size``, ``depth``, ``out_hidden_size``, ``*_token_id``,
            ``tie_word_embeddings``.

    Raises:
        ConfigError: unknown preset or override, or inconsistent dims (e.g. an ``mrope_section``
            that does not cover the rotary half of the head).
    """
    p = get_preset(preset)
    if vocab_size is None or special_token_ids is None:
        from trt_pipeline.models.tokenizer_factory import tokenizer_spec

        spec = tokenizer_spec(p)
        if vocab_size is None and p.text.get("vocab_size") is None:
            vocab_size = spec.model_vocab_size
        if special_token_ids is None:
            special_token_ids = spec.special_token_ids
    text, vision, top = resolve_dims(p, vocab_size=vocab_size, **overrides)

    missing = [tok for tok in (*CONFIG_TOKEN_FIELDS.values(), *EOS_TOKENS) if tok not in special_token_ids]
    if missing:
        raise ConfigError(f"special_token_ids lacks {', '.join(missing)}")
    ids = dict(special_token_ids)
    largest = max(ids[t] for t in (*CONFIG_TOKEN_FIELDS.values(), *EOS_TOKENS))
    if largest >= text["vocab_size"]:
        raise ConfigError(
            f"special token id {largest} does not fit a vocabulary of {text['vocab_size']} rows",
            hint="pass a larger vocab_size",
        )

    from transformers import Glm4vConfig

    rope = {"rope_type": "default", **{k: text.pop(k) for k in _TEXT_ROPE_KEYS}}
    rope["mrope_section"] = list(rope["mrope_section"])
    rope["rope_theta"] = float(rope["rope_theta"])
    text.setdefault("pad_token_id", ids[PAD_TOKEN])
    text.setdefault("eos_token_id", [ids[t] for t in EOS_TOKENS])
    text_config = {**text, "rope_parameters": rope}
    token_fields = {field_: ids[tok] for field_, tok in CONFIG_TOKEN_FIELDS.items()}
    token_fields.update({k: v for k, v in top.items() if k in CONFIG_TOKEN_FIELDS})
    config = Glm4vConfig(
        text_config=text_config,
        vision_config=dict(vision),
        tie_word_embeddings=bool(top.get("tie_word_embeddings", False)),
        **token_fields,
    )
    config.architectures = ["Glm4vForConditionalGeneration"]
    return config


def generation_config_dict(special_token_ids: Mapping[str, int]) -> dict[str, Any]:
    """GLM-4.1V generation settings: stop on ``<|endoftext|>``, ``<|user|>``, ``<|observation|>``.

    Greedy by default so tests and comparisons are deterministic.
    """
    return {
        "eos_token_id": [int(special_token_ids[t]) for t in EOS_TOKENS],
        "pad_token_id": int(special_token_ids[PAD_TOKEN]),
        "do_sample": False,
    }


__all__ = [
    "CONFIG_TOKEN_FIELDS",
    "DTYPES",
    "EOS_TOKENS",
    "PAD_TOKEN",
    "PRESETS",
    "Preset",
    "build_config",
    "generation_config_dict",
    "get_preset",
    "resolve_dims",
    "split_overrides",
]
