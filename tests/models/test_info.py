"""checkpoint_info / `autoglm-trt info` / `autoglm-trt init-checkpoint`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trt_pipeline.cli import app
from trt_pipeline.errors import CheckpointError
from trt_pipeline.fixtures.checkpoint_factory import write_checkpoint
from trt_pipeline.models.glm4v.weights import read_header as read_safetensors_header
from trt_pipeline.models.info import checkpoint_info

runner = CliRunner()


@pytest.fixture(scope="module")
def phone_9b_config_only(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("info") / "phone-9b", "phone-9b")


def _expected_total(c: dict) -> int:
    """GLM-4.1V parameter count written out from the dims in config.json (independent of info.py)."""
    t, v = c["text_config"], c["vision_config"]
    H, L, V, F = t["hidden_size"], t["num_hidden_layers"], t["vocab_size"], t["intermediate_size"]
    hd = H // t["num_attention_heads"]
    q, kv = t["num_attention_heads"] * hd, t["num_key_value_heads"] * hd
    attention = (H * q + q) + 2 * (H * kv + kv) + q * H
    mlp = H * 2 * F + F * H
    text = 2 * V * H + L * (attention + mlp + 4 * H) + H  # embed + lm_head (untied) + layers + norm
    D, O, I = v["hidden_size"], v["out_hidden_size"], v["intermediate_size"]
    P, T, M = v["patch_size"], v["temporal_patch_size"], v["spatial_merge_size"]
    block = 2 * D + 3 * D * D + D * D + 3 * D * O
    vision = (
        (3 * T * P * P * D + D)  # patch embed (Conv3d)
        + (v["image_size"] // P) ** 2 * D  # learned position table
        + v["depth"] * block
        + 2 * D  # post-conv and post norms
        + (D * O * M * M + O)  # downsample (Conv2d)
        + (O * O + 2 * O + 3 * O * I)  # merger: proj, LayerNorm, gate/up/down
    )
    return text + vision


def _stored_elements(folder: Path) -> int:
    total = 0
    for file in folder.glob("*.safetensors"):
        for name, entry in read_safetensors_header(file).items():
            if name != "__metadata__":
                n = 1
                for d in entry["shape"]:
                    n *= d
                total += n
    return total


# --- library -------------------------------------------------------------------------------------


def test_tiny_counts_equal_stored_tensors(tiny_checkpoint: Path) -> None:
    from safetensors import safe_open

    info = checkpoint_info(tiny_checkpoint)
    assert info.has_weights and info.parameters_match_weights and info.warnings == []
    with safe_open(str(tiny_checkpoint / "model.safetensors"), "pt") as handle:
        loaded = sum(handle.get_tensor(k).numel() for k in handle.keys())
    assert info.total_parameters == info.weights["total_elements"] == loaded == _stored_elements(tiny_checkpoint)
    config = json.loads((tiny_checkpoint / "config.json").read_text())
    assert info.total_parameters == _expected_total(config)
    by_component = info.weights["elements_by_component"]
    assert by_component["vision"] == info.parameters["vision_total"]
    assert by_component["text_layers"] == info.parameters["text_layers"]
    assert by_component["lm_head"] == by_component["text_embed_tokens"] == info.parameters["lm_head"]
    assert info.weights["bytes_by_dtype"] == {"F32": 4 * loaded}
    assert info.weight_bytes == 4 * loaded and not info.weight_bytes_estimated
    # dims
    assert info.text["head_dim"] == 32 and info.text["rotary_dim"] == 16
    assert info.vision["position_table_side"] == 8
    assert info.image_processor["max_image_tokens"] == 64
    assert info.tokenizer["vocab_size"] <= info.text["vocab_size"]


def test_tiny_counts_equal_the_torch_model(tiny_checkpoint: Path) -> None:
    from transformers import Glm4vForConditionalGeneration

    model = Glm4vForConditionalGeneration.from_pretrained(tiny_checkpoint)
    assert sum(p.numel() for p in model.parameters()) == checkpoint_info(tiny_checkpoint).total_parameters


def test_phone_9b_config_only(phone_9b_config_only: Path) -> None:
    import torch
    from transformers import AutoConfig, Glm4vForConditionalGeneration

    info = checkpoint_info(phone_9b_config_only)
    config = json.loads((phone_9b_config_only / "config.json").read_text())
    assert not info.has_weights and info.weights is None and info.parameters_match_weights is None
    expected = _expected_total(config)
    assert info.total_parameters == expected
    assert 9.0e9 < expected < 11.0e9  # model card: ~9.4 B language model, ~10.3 B with the vision tower
    t = config["text_config"]
    language = info.parameters["text_total"]
    assert language == 2 * t["vocab_size"] * t["hidden_size"] + info.parameters["text_layers"] + t["hidden_size"]
    assert 9.0e9 < language < 9.8e9
    # the real module tree on the meta device agrees exactly
    with torch.device("meta"):
        model = Glm4vForConditionalGeneration(AutoConfig.from_pretrained(phone_9b_config_only))
    assert sum(p.numel() for p in model.parameters()) == expected
    # sizes
    assert info.dtype == "bfloat16" and info.weight_bytes_estimated
    assert info.weight_bytes == 2 * expected  # ~20.6 GB
    kv = info.kv_cache
    assert kv["bytes_per_token_fp16"] == 2 * 40 * 2 * 128 * 2 == 40960
    assert kv["max_context"] == 65536 and kv["bytes_max_context_fp16"] == 40960 * 65536
    engines = info.engine_estimates
    host = engines["host_tables"]
    assert engines["total_fp16_bytes"] == 2 * (expected - host["embed_tokens_elements"] - host["vision_position_embedding_elements"])
    assert 0.45 < engines["total_int8_weight_only_bytes"] / engines["total_fp16_bytes"] < 0.6
    assert info.token_ids["image_token_id"] == 151343
    assert info.token_ids["generation_eos_token_id"] == [151329, 151336, 151338]
    assert info.tokenizer["special_tokens"]["<|image|>"] == 151343
    assert info.image_processor["min_pixels"] == 12544


def test_missing_folder_and_config(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(CheckpointError) as info:
        checkpoint_info(missing)
    assert str(missing) in str(info.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError) as info:
        checkpoint_info(empty)
    assert str(empty) in str(info.value) and "config.json" in str(info.value)


def test_wrong_model_type(tmp_path: Path) -> None:
    folder = tmp_path / "llama"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 64}))
    with pytest.raises(CheckpointError) as info:
        checkpoint_info(folder)
    message = str(info.value)
    assert "llama" in message and "glm4v" in message and str(folder) in message


def test_truncated_safetensors(tiny_checkpoint: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_checkpoint, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated") as info:
        checkpoint_info(broken)
    assert str(weights) in str(info.value)


# --- CLI -----------------------------------------------------------------------------------------


def test_cli_info_json_and_table(tiny_checkpoint: Path) -> None:
    result = runner.invoke(app, ["info", str(tiny_checkpoint), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["model_type"] == "glm4v"
    assert data["parameters"]["total"] == data["weights"]["total_elements"]
    assert data["kv_cache"]["bytes_per_token_fp16"] == 2 * 2 * 2 * 32 * 2

    result = runner.invoke(app, ["info", str(tiny_checkpoint)])
    assert result.exit_code == 0, result.output
    assert "Glm4vForConditionalGeneration" in result.stdout and "KV cache" in result.stdout


def test_cli_info_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    result = runner.invoke(app, ["info", str(missing)])
    assert result.exit_code == CheckpointError.exit_code != 0
    assert str(missing) in result.output

    folder = tmp_path / "bert"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    result = runner.invoke(app, ["info", str(folder), "--json"])
    assert result.exit_code != 0
    assert "bert" in result.output and str(folder) in result.output
    assert "Traceback" not in result.output


def test_cli_init_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "tiny-cli"
    result = runner.invoke(app, ["init-checkpoint", "--preset", "tiny", "--out", str(out), "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert (out / "model.safetensors").is_file() and str(out) in result.stdout
    manifest = json.loads((out / "trt_pipeline_checkpoint.json").read_text())
    assert manifest["seed"] == 3 and manifest["preset"] == "tiny"

    again = runner.invoke(app, ["init-checkpoint", "--preset", "tiny", "--out", str(out)])
    assert again.exit_code == 2 and "--overwrite" in again.output
    forced = runner.invoke(app, ["init-checkpoint", "--out", str(out), "--overwrite", "--dtype", "float16", "--config-only"])
    assert forced.exit_code == 0, forced.output
    assert not (out / "model.safetensors").exists()
    assert json.loads((out / "config.json").read_text())["dtype"] == "float16"

    bad = runner.invoke(app, ["init-checkpoint", "--preset", "huge", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "tiny, small, phone-9b" in bad.output
    assert not (tmp_path / "x").exists()

    phone = tmp_path / "phone"
    result = runner.invoke(app, ["init-checkpoint", "--preset", "phone-9b", "--out", str(phone)])
    assert result.exit_code == 0, result.output
    assert "config only" in result.stdout and not list(phone.glob("*.safetensors"))
