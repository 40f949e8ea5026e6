"""A real, offline GLM-style tokenizer for the generated checkpoints.

The real GLM-4.1V tokenizer cannot be downloaded here, so we make one with the same *shape*:

* byte-level BPE with the GPT-4 / GLM-4 pre-tokenizer split, trained deterministically on a small
  built-in Chinese + English phone-agent corpus (``tokenizer_corpus.txt``);
* GLM-4.1V's special tokens appended as added special tokens, in the real order (``<|endoftext|>``
  first, ``<|video|>`` last). For ``phone-9b`` the regular vocabulary is filled with
  ``<|reserved_N|>`` entries up to id 151329, so every special token gets its real id
  (``<|endoftext|>`` 151329 ... ``<|video|>`` 151344);
* GLM-4.1V's chat template (``[gMASK]<sop>`` prefix, ``<|user|>\\n``, images as
  ``<|begin_of_image|><|image|><|end_of_image|>``, ``<|assistant|>\\n`` generation prompt);
* eos and pad ``<|endoftext|>``, left padding, as GLM.

It is saved through ``transformers.PreTrainedTokenizerFast`` so ``AutoTokenizer.from_pretrained``
loads it offline.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trt_pipeline.errors import ConfigError
from trt_pipeline.models.presets import CONFIG_TOKEN_FIELDS, EOS_TOKENS, PAD_TOKEN, Preset, get_preset

if TYPE_CHECKING:  # pragma: no cover
    from tokenizers import Tokenizer

#: GLM-4 / GLM-4.1V special tokens in id order; the real ids start at 151329.
GLM_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "[MASK]",
    "[gMASK]",
    "[sMASK]",
    "<sop>",
    "<eop>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|observation|>",
    "<|begin_of_image|>",
    "<|end_of_image|>",
    "<|begin_of_video|>",
    "<|end_of_video|>",
    "<|image|>",
    "<|video|>",
)
REAL_SPECIAL_TOKENS_START = 151329
#: the real GLM-4.1V ids
REAL_SPECIAL_TOKEN_IDS: dict[str, int] = {
    tok: REAL_SPECIAL_TOKENS_START + i for i, tok in enumerate(GLM_SPECIAL_TOKENS)
}

#: GLM-4 (cl100k-style) pre-tokenizer split
SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

#: GLM-4.1V chat template (zai-org/GLM-4.1V-9B-*), rendered with HF's trim_blocks/lstrip_blocks
CHAT_TEMPLATE = """[gMASK]<sop>
{%- for msg in messages %}
    {%- if msg.role == 'system' %}
<|system|>
{{ msg.content }}
    {%- elif msg.role == 'user' %}
<|user|>{{ '\\n' }}
        {%- if msg.content is string %}
{{ msg.content }}
        {%- else %}
            {%- for item in msg.content %}
                {%- if item.type == 'video' or 'video' in item %}
<|begin_of_video|><|video|><|end_of_video|>
                {%- elif item.type == 'image' or 'image' in item %}
<|begin_of_image|><|image|><|end_of_image|>
                {%- elif item.type == 'text' %}
{{ item.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
    {%- elif msg.role == 'assistant' %}
        {%- if msg.metadata %}
<|assistant|>{{ msg.metadata }}
{{ msg.content }}
        {%- else %}
<|assistant|>
{{ msg.content }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{% if add_generation_prompt %}<|assistant|>
{% endif %}"""

CORPUS_RESOURCE = "tokenizer_corpus.txt"


@dataclass(frozen=True)
class TokenizerSpec:
    """What the model config needs to know about a generated tokenizer.

    Attributes:
        vocab_size: ``len(tokenizer)``: regular vocabulary plus special tokens.
        model_vocab_size: embedding / lm_head rows (``vocab_size`` padded, like the real 151552).
        bpe_vocab_size: size of the trained BPE vocabulary (before reserved fillers).
        special_token_ids: token string -> id for every GLM special token.
    """

    vocab_size: int
    model_vocab_size: int
    bpe_vocab_size: int
    special_token_ids: dict[str, int] = field(default_factory=dict)

    @property
    def eos_token_ids(self) -> list[int]:
        """GLM's generation stop ids: ``<|endoftext|>``, ``<|user|>``, ``<|observation|>``."""
        return [self.special_token_ids[t] for t in EOS_TOKENS]

    @property
    def pad_token_id(self) -> int:
        return self.special_token_ids[PAD_TOKEN]

    def config_token_ids(self) -> dict[str, int]:
        """``Glm4vConfig`` fields: ``image_token_id``, ``image_start_token_id``, ``video_*`` ..."""
        return {name: self.special_token_ids[tok] for name, tok in CONFIG_TOKEN_FIELDS.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "vocab_size": self.vocab_size,
            "model_vocab_size": self.model_vocab_size,
            "bpe_vocab_size": self.bpe_vocab_size,
            "special_token_ids": dict(self.special_token_ids),
            "eos_token_ids": self.eos_token_ids,
            "pad_token_id": self.pad_token_id,
            **self.config_token_ids(),
        }


def corpus_lines() -> list[str]:
    """The built-in training corpus (non-empty lines)."""
    text = resources.files("trt_pipeline.models").joinpath(CORPUS_RESOURCE).read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip()]


def _train_bpe(bpe_vocab_size: int) -> Tokenizer:
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=bpe_vocab_size,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    lines = corpus_lines()
    tokenizer.train_from_iterator(lines, trainer=trainer, length=len(lines))
    return tokenizer


def _fill_reserved(tokenizer: Tokenizer, start: int) -> Tokenizer:
    """Extend the BPE vocabulary with ``<|reserved_N|>`` entries up to id ``start - 1``.

    The fillers take no merges, so byte-level encoding never produces them; they only move the
    special tokens to their real ids.
    """
    from tokenizers import Tokenizer

    data = json.loads(tokenizer.to_str())
    vocab: dict[str, int] = data["model"]["vocab"]
    if len(vocab) > start:
        raise ConfigError(f"BPE vocabulary ({len(vocab)}) is larger than the special-token start id {start}")
    for i in range(len(vocab), start):
        vocab[f"<|reserved_{i}|>"] = i
    return Tokenizer.from_str(json.dumps(data, ensure_ascii=False))


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def build_tokenizer(preset: str | Preset = "tiny") -> tuple[Tokenizer, TokenizerSpec]:
    """Train the BPE tokenizer for ``preset`` and append GLM's special tokens (in memory)."""
    from tokenizers import AddedToken

    p = get_preset(preset)
    opts = p.tokenizer
    tokenizer = _train_bpe(int(opts.get("bpe_vocab_size", 3000)))
    bpe_size = tokenizer.get_vocab_size()
    start = opts.get("special_tokens_start")
    if start is not None:
        tokenizer = _fill_reserved(tokenizer, int(start))
    tokenizer.add_special_tokens([AddedToken(tok, special=True, normalized=False) for tok in GLM_SPECIAL_TOKENS])
    ids = {tok: tokenizer.token_to_id(tok) for tok in GLM_SPECIAL_TOKENS}
    size = tokenizer.get_vocab_size(with_added_tokens=True)
    model_vocab = p.text.get("vocab_size") or _round_up(size, int(opts.get("pad_vocab_to_multiple_of", 1)))
    if model_vocab < size:
        raise ConfigError(f"preset {p.name!r}: vocab_size {model_vocab} is smaller than the tokenizer ({size})")
    return tokenizer, TokenizerSpec(
        vocab_size=size, model_vocab_size=int(model_vocab), bpe_vocab_size=bpe_size, special_token_ids=ids
    )


@functools.lru_cache(maxsize=8)
def _spec_cached(preset: Preset) -> TokenizerSpec:
    if preset.tokenizer.get("special_tokens_start") is not None:
        # ids are fixed by construction; no need to build the 151k-entry vocabulary
        start = int(preset.tokenizer["special_tokens_start"])
        ids = {tok: start + i for i, tok in enumerate(GLM_SPECIAL_TOKENS)}
        size = start + len(GLM_SPECIAL_TOKENS)
        model_vocab = preset.text.get("vocab_size") or size
        bpe = _train_bpe(int(preset.tokenizer.get("bpe_vocab_size", 3000))).get_vocab_size()
        return TokenizerSpec(vocab_size=size, model_vocab_size=int(model_vocab), bpe_vocab_size=bpe, special_token_ids=ids)
    return build_tokenizer(preset)[1]


def tokenizer_spec(preset: str | Preset = "tiny") -> TokenizerSpec:
    """Sizes and special-token ids of ``preset``'s tokenizer, without writing files (cached)."""
    return _spec_cached(get_preset(preset))


def write_tokenizer(out_dir: Path | str, preset: str | Preset = "tiny") -> TokenizerSpec:
    """Save ``tokenizer.json``, ``tokenizer_config.json`` and ``chat_template.jinja`` into ``out_dir``."""
    from transformers import PreTrainedTokenizerFast

    p = get_preset(preset)
    tokenizer, spec = build_tokenizer(p)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=PAD_TOKEN,
        pad_token=PAD_TOKEN,
        chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
        model_max_length=int(p.text["max_position_embeddings"]),
        padding_side="left",
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out))
    return spec


__all__ = [
    "CHAT_TEMPLATE",
    "GLM_SPECIAL_TOKENS",
    "REAL_SPECIAL_TOKEN_IDS",
    "TokenizerSpec",
    "build_tokenizer",
    "corpus_lines",
    "tokenizer_spec",
    "write_tokenizer",
]
