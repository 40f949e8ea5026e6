"""Presets, the generated tokenizer and deterministic random GLM-4.1V checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trt_pipeline.artifacts import sha256_file
from trt_pipeline.errors import ConfigError, OutputFolderError
from trt_pipeline.fixtures.checkpoint_factory import has_weights, write_checkpoint
from trt_pipeline.models.glm4v.sizes import count_parameters_from_config
from trt_pipeline.models.glm4v.weights import read_header as read_safetensors_header
from trt_pipeline.fixtures.model_config import build_config
from trt_pipeline.fixtures.presets import PRESETS, get_preset
from trt_pipeline.fixtures.tokenizer_factory import (
    CHAT_TEMPLATE,
    GLM_SPECIAL_TOKENS,
    REAL_SPECIAL_TOKEN_IDS,
    tokenizer_spec,
)

IMAGE_BLOCK = "<|begin_of_image|><|image|><|end_of_image|>"


# --- presets / build_config ---------------------------------------------------------------------


def test_registry_and_unknown_preset() -> None:
    assert set(PRESETS) == {"tiny", "small", "phone-9b", "trained"}
    assert get_preset("tiny") is PRESETS["tiny"]
    with pytest.raises(ConfigError) as info:
        get_preset("huge")
    message = str(info.value)
    assert "huge" in message and all(name in message for name in PRESETS)


def test_tiny_config_dims_and_token_ids() -> None:
    cfg = build_config("tiny")
    spec = tokenizer_spec("tiny")
    text, vision = cfg.text_config, cfg.vision_config
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads, text.num_key_value_heads) == (128, 2, 4, 2)
    assert text.intermediate_size == 256 and text.max_position_embeddings == 4096
    head_dim = text.hidden_size // text.num_attention_heads
    rope = text.rope_parameters
    assert head_dim == 32 and rope["partial_rotary_factor"] == 0.5
    assert sum(rope["mrope_section"]) * 2 == int(head_dim * rope["partial_rotary_factor"])
    assert (vision.depth, vision.hidden_size, vision.num_heads, vision.image_size) == (2, 64, 4, 112)
    assert vision.out_hidden_size == text.hidden_size
    assert text.vocab_size == spec.model_vocab_size >= spec.vocab_size
    assert text.vocab_size % 64 == 0
    assert cfg.image_token_id == spec.special_token_ids["<|image|>"]
    assert cfg.image_start_token_id == spec.special_token_ids["<|begin_of_image|>"]
    assert cfg.video_end_token_id == spec.special_token_ids["<|end_of_video|>"]
    assert text.eos_token_id == spec.eos_token_ids
    assert text.pad_token_id == spec.special_token_ids["<|endoftext|>"]


def test_build_config_overrides() -> None:
    cfg = build_config(
        "tiny",
        text_num_key_value_heads=1,
        vision_num_heads=2,
        mrope_section=[4, 2, 2],
        image_size=56,
        rope_theta=500.0,
    )
    assert cfg.text_config.num_key_value_heads == 1
    assert cfg.vision_config.num_heads == 2
    assert cfg.vision_config.image_size == 56
    assert cfg.text_config.rope_parameters["mrope_section"] == [4, 2, 2]
    assert cfg.text_config.rope_parameters["rope_theta"] == 500.0
    # explicit vocab / ids win
    ids = dict(REAL_SPECIAL_TOKEN_IDS)
    cfg = build_config("tiny", vocab_size=151552, special_token_ids=ids)
    assert cfg.text_config.vocab_size == 151552 and cfg.image_token_id == 151343


@pytest.mark.parametrize(
    "overrides, needle",
    [
        ({"mrope_section": [8, 12, 12]}, "mrope_section"),
        ({"text_num_key_value_heads": 3}, "num_key_value_heads"),
        ({"image_size": 100}, "image_size"),
        ({"no_such_field": 1}, "no_such_field"),
    ],
)
def test_build_config_rejects_bad_overrides(overrides: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        build_config("tiny", **overrides)


def test_phone_9b_and_small_configs() -> None:
    cfg = build_config("phone-9b")
    text, vision = cfg.text_config, cfg.vision_config
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads, text.num_key_value_heads) == (4096, 40, 32, 2)
    assert (text.intermediate_size, text.vocab_size, text.max_position_embeddings) == (13696, 151552, 65536)
    assert text.rope_parameters["mrope_section"] == [8, 12, 12]
    assert (vision.depth, vision.hidden_size, vision.num_heads, vision.out_hidden_size) == (24, 1536, 12, 4096)
    assert (vision.intermediate_size, vision.image_size, vision.patch_size) == (13696, 336, 14)
    assert cfg.image_token_id == 151343 and cfg.video_token_id == 151344
    assert cfg.image_start_token_id == 151339 and cfg.video_end_token_id == 151342
    assert text.eos_token_id == [151329, 151336, 151338]
    assert PRESETS["phone-9b"].config_only_default

    small = count_parameters_from_config(build_config("small").to_dict())["total"]
    assert 100e6 <= small <= 300e6


# --- the tiny checkpoint ------------------------------------------------------------------------


def test_tiny_checkpoint_layout(tiny_checkpoint: Path) -> None:
    names = {p.name for p in tiny_checkpoint.iterdir()}
    for name in (
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
        "preprocessor_config.json",
    ):
        assert name in names
    assert "model.safetensors.index.json" not in names
    assert (tiny_checkpoint / "model.safetensors").stat().st_size < 10 * 1024 * 1024
    assert not [p for p in tiny_checkpoint.parent.iterdir() if p.name.startswith(".")]  # no temp leftovers
    generation = json.loads((tiny_checkpoint / "generation_config.json").read_text())
    spec = tokenizer_spec("tiny")
    assert generation["eos_token_id"] == [
        spec.special_token_ids[t] for t in ("<|endoftext|>", "<|user|>", "<|observation|>")
    ]
    assert generation["pad_token_id"] == spec.special_token_ids["<|endoftext|>"]


def test_tiny_checkpoint_loads_and_runs_with_an_image(tiny_checkpoint: Path) -> None:
    import numpy as np
    import torch
    from PIL import Image
    from transformers import AutoTokenizer, Glm4vForConditionalGeneration, Glm4vImageProcessorPil

    model = Glm4vForConditionalGeneration.from_pretrained(tiny_checkpoint).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_checkpoint)
    processor = Glm4vImageProcessorPil.from_pretrained(tiny_checkpoint)
    assert model.config.text_config.vocab_size >= len(tokenizer)

    image = Image.fromarray((np.random.RandomState(0).rand(90, 150, 3) * 255).astype("uint8"))
    features = processor(images=[image], return_tensors="pt")
    grid = features["image_grid_thw"]
    n_tokens = int(grid.prod()) // model.config.vision_config.spatial_merge_size**2
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "打开微信"}]}]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    prompt = prompt.replace("<|image|>", "<|image|>" * n_tokens)
    enc = tokenizer(prompt, return_tensors="pt")
    mm_token_type_ids = (enc.input_ids == model.config.image_token_id).long()
    assert int(mm_token_type_ids.sum()) == n_tokens
    with torch.no_grad():
        logits = model(
            input_ids=enc.input_ids,
            attention_mask=enc.attention_mask,
            pixel_values=features["pixel_values"],
            image_grid_thw=grid,
            mm_token_type_ids=mm_token_type_ids,
        ).logits
    assert logits.shape == (1, enc.input_ids.shape[1], model.config.text_config.vocab_size)
    assert torch.isfinite(logits).all()
    assert float(logits[0, -1].std()) > 0.1  # initializer_range 0.05: logits are not all near-equal


def test_tokenizer_chat_template_and_special_ids(tiny_checkpoint: Path) -> None:
    from transformers import AutoConfig, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_checkpoint)
    config = AutoConfig.from_pretrained(tiny_checkpoint)
    spec = tokenizer_spec("tiny")
    assert 2000 <= len(tokenizer) <= 4000
    assert tokenizer.convert_tokens_to_ids(list(GLM_SPECIAL_TOKENS)) == [
        spec.special_token_ids[t] for t in GLM_SPECIAL_TOKENS
    ]
    # special tokens come right after the BPE vocabulary, in GLM's order
    assert spec.special_token_ids["<|endoftext|>"] == spec.bpe_vocab_size
    assert tokenizer.convert_tokens_to_ids("<|image|>") == config.image_token_id
    assert tokenizer.convert_tokens_to_ids("<|begin_of_image|>") == config.image_start_token_id
    assert tokenizer.convert_tokens_to_ids("<|end_of_image|>") == config.image_end_token_id
    assert tokenizer.convert_tokens_to_ids("<|video|>") == config.video_token_id
    assert tokenizer.eos_token == tokenizer.pad_token == "<|endoftext|>"

    messages = [
        {"role": "system", "content": "You are a phone agent."},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "打开设置，关闭蓝牙"}]},
    ]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == (
        "[gMASK]<sop><|system|>\nYou are a phone agent.<|user|>\n" + IMAGE_BLOCK + "打开设置，关闭蓝牙<|assistant|>\n"
    )
    plain = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Open Settings"}], tokenize=False, add_generation_prompt=True
    )
    assert plain == "[gMASK]<sop><|user|>\nOpen Settings<|assistant|>\n"
    assert (tiny_checkpoint / "chat_template.jinja").read_text() == CHAT_TEMPLATE

    ids = tokenizer(text, add_special_tokens=False).input_ids
    block = [config.image_start_token_id, config.image_token_id, config.image_end_token_id]
    assert any(ids[i : i + 3] == block for i in range(len(ids)))
    assert ids[:2] == [spec.special_token_ids["[gMASK]"], spec.special_token_ids["<sop>"]]
    assert tokenizer.decode(ids) == text  # byte-level BPE round-trips Chinese + specials


def test_image_processor_config_bounds(tiny_checkpoint: Path) -> None:
    from PIL import Image
    from transformers import Glm4vImageProcessorPil

    processor = Glm4vImageProcessorPil.from_pretrained(tiny_checkpoint)
    preset = get_preset("tiny")
    assert processor.size.shortest_edge == 112 * 112
    assert processor.size.longest_edge == 2 * 256 * 14 * 14
    assert (processor.patch_size, processor.temporal_patch_size, processor.merge_size) == (14, 2, 2)
    for size in ((1080, 2400), (2000, 2000), (50, 50)):
        grid = processor(images=[Image.new("RGB", size)])["image_grid_thw"][0]
        patches = int(grid[0] * grid[1] * grid[2])
        assert patches <= preset.max_image_patches == 256
        assert grid[1] % 2 == 0 and grid[2] % 2 == 0


# --- determinism, sharding, dtype ---------------------------------------------------------------


def test_same_seed_same_bytes_other_seed_differs(tiny_checkpoint: Path, tmp_path: Path) -> None:
    again = write_checkpoint(tmp_path / "again", "tiny", seed=0)
    other = write_checkpoint(tmp_path / "other", "tiny", seed=1)
    reference = sha256_file(tiny_checkpoint / "model.safetensors")
    assert sha256_file(again / "model.safetensors") == reference
    assert sha256_file(other / "model.safetensors") != reference
    for name in ("config.json", "tokenizer.json", "preprocessor_config.json"):
        assert (again / name).read_bytes() == (tiny_checkpoint / name).read_bytes()


def test_sharded_bfloat16_checkpoint(tiny_checkpoint: Path, tmp_path: Path) -> None:
    import torch
    from transformers import Glm4vForConditionalGeneration

    out = write_checkpoint(tmp_path / "sharded", "tiny", dtype="bfloat16", max_shard_size="1MB")
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) >= 2 and not (out / "model.safetensors").exists()
    headers = [read_safetensors_header(out / s) for s in shards]
    dtypes = {e["dtype"] for h in headers for k, e in h.items() if k != "__metadata__"}
    assert dtypes == {"BF16"}
    n_sharded = sum(len([k for k in h if k != "__metadata__"]) for h in headers)
    assert n_sharded == len(read_safetensors_header(tiny_checkpoint / "model.safetensors")) - 1

    model = Glm4vForConditionalGeneration.from_pretrained(out, dtype=torch.bfloat16)
    reference = Glm4vForConditionalGeneration.from_pretrained(tiny_checkpoint)
    a = model.state_dict()["lm_head.weight"]
    b = reference.state_dict()["lm_head.weight"].to(torch.bfloat16)
    assert torch.equal(a, b)  # same seed -> same weights, then cast


# --- config-only, overwrite, atomicity -----------------------------------------------------------


def test_config_only_phone_9b(tmp_path: Path) -> None:
    from transformers import AutoConfig, AutoTokenizer

    out = write_checkpoint(tmp_path / "phone", "phone-9b")
    assert not has_weights(out)
    assert not list(out.glob("*.safetensors"))
    config = AutoConfig.from_pretrained(out)
    assert config.model_type == "glm4v" and config.architectures == ["Glm4vForConditionalGeneration"]
    assert config.text_config.vocab_size == 151552
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.convert_tokens_to_ids(list(GLM_SPECIAL_TOKENS)) == [REAL_SPECIAL_TOKEN_IDS[t] for t in GLM_SPECIAL_TOKENS]
    assert REAL_SPECIAL_TOKEN_IDS["<|endoftext|>"] == 151329 and REAL_SPECIAL_TOKEN_IDS["<|video|>"] == 151344
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert IMAGE_BLOCK in text
    ids = tokenizer(text, add_special_tokens=False).input_ids
    assert ids[:2] == [151331, 151333]  # [gMASK] <sop>
    assert 151343 in ids
    manifest = json.loads((out / "trt_pipeline_checkpoint.json").read_text())
    assert manifest["config_only"] is True and manifest["dtype"] == "bfloat16"


def test_refuses_non_empty_folder_unless_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "ckpt"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(ConfigError) as info:
        write_checkpoint(out, "tiny", config_only=True)
    assert str(out) in str(info.value)
    assert (out / "keep.txt").read_text() == "precious"
    # issue 17: --overwrite replaces only folders this tool wrote; a user's folder is never deleted
    with pytest.raises(OutputFolderError) as info:
        write_checkpoint(out, "tiny", config_only=True, overwrite=True)
    assert str(out) in str(info.value) and info.value.exit_code == 2
    assert (out / "keep.txt").read_text() == "precious"
    ours = write_checkpoint(tmp_path / "ours", "tiny", config_only=True)
    (ours / "stale.txt").write_text("from an earlier run")
    write_checkpoint(ours, "tiny", config_only=True, overwrite=True)
    assert not (ours / "stale.txt").exists() and (ours / "config.json").exists()
    (tmp_path / "empty").mkdir()
    write_checkpoint(tmp_path / "empty", "tiny", config_only=True)  # an empty folder is fine


def test_no_partial_folder_when_writing_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import Glm4vForConditionalGeneration

    def boom(self, *args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(Glm4vForConditionalGeneration, "save_pretrained", boom)
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_checkpoint(tmp_path / "broken", "tiny")
    assert list(tmp_path.iterdir()) == []

    # an existing checkpoint survives a failed overwrite untouched
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "config.json").write_text("{}")
    (existing / "trt_pipeline_checkpoint.json").write_text("{}")  # ours: --overwrite may replace it (issue 17)
    with pytest.raises(RuntimeError):
        write_checkpoint(existing, "tiny", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing"]
    assert (existing / "config.json").read_text() == "{}"


def test_rejects_bad_dtype_and_overrides_before_writing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="dtype"):
        write_checkpoint(tmp_path / "a", "tiny", dtype="int4")
    with pytest.raises(ConfigError, match="mrope_section"):
        write_checkpoint(tmp_path / "b", "tiny", overrides={"mrope_section": [1, 1, 1]})
    assert list(tmp_path.iterdir()) == []


def test_overrides_reach_the_written_config(tmp_path: Path) -> None:
    out = write_checkpoint(
        tmp_path / "variant", "tiny", config_only=True, overrides={"text_num_key_value_heads": 1, "vision_num_heads": 2}
    )
    config = json.loads((out / "config.json").read_text())
    assert config["text_config"]["num_key_value_heads"] == 1
    assert config["vision_config"]["num_heads"] == 2
