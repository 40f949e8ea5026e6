"""Loading: sharded / bf16 checkpoints load; broken checkpoints are refused by name."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from trt_pipeline.errors import CheckpointError
from trt_pipeline.models.glm4v.model import Glm4vExportModel


def copy_checkpoint(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_loads_like_transformers(tiny_checkpoint):
    from transformers import Glm4vForConditionalGeneration

    ours = Glm4vExportModel.from_pretrained(tiny_checkpoint, dtype="float32")
    theirs = Glm4vForConditionalGeneration.from_pretrained(str(tiny_checkpoint), dtype=torch.float32)
    their_state = {k.removeprefix("model."): v for k, v in theirs.state_dict().items()}
    for name, param in ours.named_parameters():
        assert torch.equal(param, their_state[name]), name
    assert not any(p.is_meta for p in ours.parameters())


def test_sharded_bf16_checkpoint(tiny_checkpoint, tmp_path):
    from trt_pipeline.fixtures.checkpoint_factory import write_checkpoint

    sharded = write_checkpoint(tmp_path / "sharded", preset="tiny", seed=0, dtype="bfloat16", max_shard_size="1MB")
    assert (sharded / "model.safetensors.index.json").is_file()
    assert len(list(sharded.glob("*.safetensors"))) > 1
    kept = Glm4vExportModel.from_pretrained(sharded)  # keeps bf16, no copy
    assert kept.dtype == torch.bfloat16
    as_fp32 = Glm4vExportModel.from_pretrained(sharded, dtype="float32")
    reference = Glm4vExportModel.from_pretrained(tiny_checkpoint, dtype="float32")
    diff = (as_fp32.lm_head.weight - reference.lm_head.weight).abs().max().item()
    assert 0 < diff < 1e-2  # bf16 rounding only


def rewrite(path: Path, edit) -> None:
    tensors = load_file(str(path))
    edit(tensors)
    save_file(tensors, str(path), metadata={"format": "pt"})


def test_missing_tensor_is_named(tiny_checkpoint, tmp_path):
    ck = copy_checkpoint(tiny_checkpoint, tmp_path / "ck")
    rewrite(ck / "model.safetensors", lambda t: t.pop("model.language_model.layers.1.mlp.down_proj.weight"))
    with pytest.raises(CheckpointError, match=r"missing tensor.*language_model\.layers\.1\.mlp\.down_proj\.weight"):
        Glm4vExportModel.from_pretrained(ck)


def test_misshaped_tensor_is_named(tiny_checkpoint, tmp_path):
    ck = copy_checkpoint(tiny_checkpoint, tmp_path / "ck")
    name = "model.language_model.layers.0.self_attn.q_proj.weight"
    rewrite(ck / "model.safetensors", lambda t: t.__setitem__(name, torch.zeros(3, 5)))
    with pytest.raises(CheckpointError) as info:
        Glm4vExportModel.from_pretrained(ck)
    message = str(info.value)
    assert name in message and "[3, 5]" in message and "model.safetensors" in message


def test_truncated_file_is_named(tiny_checkpoint, tmp_path):
    ck = copy_checkpoint(tiny_checkpoint, tmp_path / "ck")
    file = ck / "model.safetensors"
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"model\.safetensors is truncated: \d+ bytes on disk"):
        Glm4vExportModel.from_pretrained(ck)


def test_missing_shard_is_named(tmp_path):
    from trt_pipeline.fixtures.checkpoint_factory import write_checkpoint

    ck = write_checkpoint(tmp_path / "sharded", preset="tiny", seed=0, max_shard_size="1MB")
    shard = sorted(ck.glob("model-*.safetensors"))[-1]
    shard.unlink()
    with pytest.raises(CheckpointError, match=shard.name):
        Glm4vExportModel.from_pretrained(ck)


def test_other_architecture_is_refused(tiny_checkpoint, tmp_path):
    ck = copy_checkpoint(tiny_checkpoint, tmp_path / "ck")
    config = json.loads((ck / "config.json").read_text())
    config["model_type"] = "qwen2_vl"
    (ck / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"config\.json: model_type is 'qwen2_vl', expected"):
        Glm4vExportModel.from_pretrained(ck)


def test_missing_folder_and_config(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        Glm4vExportModel.from_pretrained(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="config.json not found"):
        Glm4vExportModel.from_pretrained(tmp_path / "empty")
