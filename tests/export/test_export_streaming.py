"""Memory-bounded export (issue 12): weight-free trace + streamed initializers equal the in-memory
export on ONNX Runtime, the initializers are the checkpoint's own bytes, bad shards are refused."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnxruntime as ort
import pytest

from trt_pipeline.config import ExportConfig
from trt_pipeline.errors import CheckpointError
from trt_pipeline.export.exporter import export
from trt_pipeline.export.streaming import verify_initializer_hashes
from trt_pipeline.graph.simplify import random_feed

from tests.conftest import COMPARE_CFG


@pytest.fixture(scope="module")
def streamed(streamed_export):
    return streamed_export


@pytest.mark.parametrize("component", ["vision_encoder", "decoder"])
def test_streamed_equals_in_memory_on_onnxruntime(streamed, compare_export, component):
    # ONNX Runtime's own fusions off: the two graphs are simplified differently (with and without the
    # weights), so ORT may fuse the RMSNorm in one and not the other (1.7e-6 apart); what is checked
    # here is the exported graphs, not ORT's choice of kernels
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sessions = [ort.InferenceSession(str(folder / "onnx" / "fp32" / f"{component}.onnx"), sess_options=options,
                                     providers=["CPUExecutionProvider"]) for folder in (compare_export, streamed)]
    for seed, sizes in enumerate([
        {"num_patches": 16, "batch_size": 2, "sequence_length": 5, "past_sequence_length": 3, "total_sequence_length": 8},
        {"num_patches": 32, "batch_size": 1, "sequence_length": 9, "past_sequence_length": 0, "total_sequence_length": 9},
    ]):
        feed = random_feed(sessions[0], sizes, seed)
        reference, actual = (s.run(None, feed) for s in sessions)
        worst = max(float(np.abs(a.astype(np.float64) - b).max()) for a, b in zip(reference, actual))
        assert worst <= 1e-6, (component, sizes, worst)


def test_initializers_are_the_checkpoint_bytes(streamed, tiny_checkpoint):
    for component in ("vision_encoder", "decoder"):
        result = verify_initializer_hashes(streamed / "onnx" / "fp32" / f"{component}.onnx", tiny_checkpoint)
        assert result["equal"] and result["checked"] > 20, result


def test_manifest_says_streamed(streamed):
    manifest = json.loads((streamed / "export.json").read_text())
    assert manifest["streamed"] is True and manifest["dtype"] == "float32"
    for entry in manifest["components"].values():
        assert entry["external_data"] and "weight-free" in entry["simplify"]["method"]


def test_streamed_fp16_from_bf16_validates(tmp_path):
    """dtype conversion while streaming: a bf16 checkpoint exported as fp16, validated on ORT
    against transformers in fp16 (tolerance 2x transformers' own fp16-vs-fp32 drift)."""
    from trt_pipeline.fixtures.checkpoint_factory import write_checkpoint

    checkpoint = write_checkpoint(tmp_path / "ck", preset="tiny", seed=4, dtype="bfloat16", streaming=True,
                                  max_shard_size="1MB")
    out = export(checkpoint, tmp_path / "out", ExportConfig(
        dtype="float16", streaming=True, max_batch=2, max_seq=16, max_kv=16, max_image_tokens=16), show_progress=False)
    report = json.loads((out / "reports" / "validation-fp16.json").read_text())
    assert report["passed"] and report["backend"] == "onnxruntime-cpu"
    assert max(r["max_abs"] for r in report["results"]) > 0  # not vacuous


@pytest.fixture()
def sharded(tmp_path):
    from trt_pipeline.fixtures.checkpoint_factory import write_checkpoint

    return write_checkpoint(tmp_path / "ck", preset="tiny", seed=1, streaming=True, max_shard_size="1MB")


def _export_fails(checkpoint, out, match):
    with pytest.raises(CheckpointError, match=match) as info:
        export(checkpoint, out, ExportConfig(streaming=True, **COMPARE_CFG), show_progress=False)
    assert not out.exists() and not list(out.parent.glob(f".{out.name}*"))  # no partial output
    return info.value


def test_truncated_shard(sharded, tmp_path):
    shard = sorted(sharded.glob("model-*.safetensors"))[1]
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    error = _export_fails(sharded, tmp_path / "out", "truncated")
    assert shard.name in str(error)


def test_missing_shard_named_in_index(sharded, tmp_path):
    shard = sorted(sharded.glob("model-*.safetensors"))[-1]
    shard.unlink()
    error = _export_fails(sharded, tmp_path / "out", "missing")
    assert shard.name in str(error)


def test_tensor_of_wrong_shape(sharded, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    name = "model.language_model.layers.0.mlp.down_proj.weight"
    shard = sharded / index["weight_map"][name]
    tensors = load_file(str(shard))
    tensors[name] = torch.zeros(tensors[name].shape[0], tensors[name].shape[1] + 1)
    save_file(tensors, str(shard), metadata={"format": "pt"})
    error = _export_fails(sharded, tmp_path / "out", "shape")
    assert shard.name in str(error) and name in str(error)


def test_hub_id_not_cached_offline(tmp_path, monkeypatch):
    """A Hub id that is not in the cache, with HF_HUB_OFFLINE: a clear error and no output."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    with pytest.raises(CheckpointError, match="offline mode is on") as info:
        export("zai-org/AutoGLM-Phone-9B", out, ExportConfig(**COMPARE_CFG), show_progress=False)
    assert "zai-org/AutoGLM-Phone-9B" in str(info.value) and not out.exists()


def test_hub_id_resolves_from_the_cache(tiny_checkpoint, tmp_path, monkeypatch):
    """A cached snapshot is used offline (the cache layout huggingface_hub writes)."""
    from huggingface_hub import constants

    from trt_pipeline.models.hub import resolve_checkpoint

    cache = tmp_path / "hf-cache"
    snapshot = cache / "models--org--tiny" / "snapshots" / ("0" * 40)
    shutil.copytree(tiny_checkpoint, snapshot)
    (cache / "models--org--tiny" / "refs").mkdir(parents=True)
    (cache / "models--org--tiny" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.chdir(tmp_path)
    assert resolve_checkpoint("org/tiny") == snapshot
