"""Export acceptance: ONNX vs transformers over the dim grid, one session for every shape,
ORT generation token-for-token equal to transformers, forced external data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from trt_pipeline.config import ExportConfig
from trt_pipeline.export.exporter import export
from trt_pipeline.generate import GenerateRequest, generate

GRID_CONFIG = ExportConfig(max_batch=4, max_seq=64, max_kv=96, max_image_tokens=64)
GQA_OVERRIDES = {
    "text_num_attention_heads": 8,
    "text_num_key_value_heads": 1,
    "mrope_section": [2, 1, 1],
    "vision_num_heads": 2,
    "image_size": 84,
}


@pytest.fixture(scope="module", params=["tiny", "gqa8"])
def exported(request, tmp_path_factory):
    """Two configs exported with validation on (validation raises AtolError above 1e-4 / 1e-5)."""
    from trt_pipeline.fixtures.checkpoint_factory import write_checkpoint

    root = tmp_path_factory.mktemp(f"export-{request.param}")
    overrides = GQA_OVERRIDES if request.param == "gqa8" else {}
    checkpoint = write_checkpoint(root / "ck", preset="tiny", seed=7, overrides=overrides)
    out = export(checkpoint, root / "out", GRID_CONFIG, show_progress=False)
    return checkpoint, out


def test_layout_and_manifest(exported):
    _, out = exported
    manifest = json.loads((out / "export.json").read_text())
    assert set(manifest["components"]) == {"vision_encoder", "decoder"}
    for name, entry in manifest["components"].items():
        path = out / entry["file"]
        assert path.is_file() and entry["sha256"]
        model = onnx.load(str(path), load_external_data=False)
        declared = {t["name"]: t["shape"] for t in entry["inputs"] + entry["outputs"]}
        for value in (*model.graph.input, *model.graph.output):
            dims = [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
            assert dims == declared[value.name], value.name
    dims = manifest["dims"]
    assert dims["batch_size"] == {"min": 1, "opt": 1, "max": 4}
    assert dims["past_sequence_length"]["min"] == 0 and dims["past_sequence_length"]["max"] == 96
    assert dims["num_patches"]["max"] == 4 * dims["num_image_tokens"]["max"] == 256
    for key in ("torch", "onnx", "transformers"):
        assert key in manifest["tool_versions"]
    assert (out / "hf" / "tokenizer.json").is_file() and (out / "embeddings" / "embed_tokens.safetensors").is_file()


def test_validation_grid_within_tolerance(exported):
    _, out = exported
    report = json.loads((out / "reports" / "validation.json").read_text())
    assert report["passed"]
    decoder_points = {tuple(r["point"].values()) for r in report["results"] if r["component"] == "decoder"}
    assert len(decoder_points) == 27  # 3 batch x 3 sequence x 3 past values
    batches = {p[0] for p in decoder_points}
    pasts = {p[2] for p in decoder_points}
    assert batches == {1, 2, 4} and pasts == {0, 48, 96}
    assert report["worst_max_abs"]["decoder"] <= 1e-4
    assert report["worst_max_abs"]["vision_encoder"] <= 1e-5


def test_one_session_serves_every_shape(exported):
    from trt_pipeline.runtime.onnxruntime_runner import session

    _, out = exported
    sess = session(out / "onnx" / "fp32" / "decoder.onnx")
    inputs = {i.name: i for i in sess.get_inputs()}
    hidden = inputs["inputs_embeds"].shape[2]
    rotary = inputs["rope_cos"].shape[2]
    kv_heads, head_dim = inputs["past_key_values.0.key"].shape[1], inputs["past_key_values.0.key"].shape[3]
    rng = np.random.default_rng(0)
    for batch, seq, past in [(1, 1, 0), (4, 64, 0), (3, 1, 96), (2, 17, 40), (4, 1, 1)]:
        feed = {
            "inputs_embeds": rng.standard_normal((batch, seq, hidden)).astype(np.float32),
            "attention_mask": np.ones((batch, past + seq), np.int64),
            "rope_cos": np.ones((batch, seq, rotary), np.float32),
            "rope_sin": np.zeros((batch, seq, rotary), np.float32),
            "logits_positions": np.arange(seq, dtype=np.int64),
        }
        for name in inputs:
            if name.startswith("past_key_values"):
                feed[name] = rng.standard_normal((batch, kv_heads, past, head_dim)).astype(np.float32)
        logits, present = sess.run(["logits", "present.0.key"], feed)
        assert logits.shape[:2] == (batch, seq) and np.isfinite(logits).all()
        assert present.shape == (batch, kv_heads, past + seq, head_dim)


def test_ort_generation_matches_transformers_for_32_tokens(exported):
    from PIL import Image

    checkpoint, out = exported
    image_path = out.parent / "screen.png"
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 255, (196, 112, 3), dtype=np.uint8)).save(image_path)
    prompts = ["Open Settings and turn on Wi-Fi", "在淘宝搜索蓝牙耳机"]
    images = [[image_path], []]
    torch_out = generate(GenerateRequest(out, prompts, images, backend="torch", max_new_tokens=32))
    ort_out = generate(GenerateRequest(out, prompts, images, backend="ort", max_new_tokens=32))
    assert ort_out.token_ids == torch_out.token_ids
    assert ort_out.texts == torch_out.texts
    assert all(len(row) > 0 for row in ort_out.token_ids)


def test_forced_external_data(tiny_checkpoint, tmp_path):
    from trt_pipeline.export.onnx_export import relative_external_data_ok
    from trt_pipeline.runtime.onnxruntime_runner import session

    cfg = ExportConfig(max_seq=32, max_kv=32, max_image_tokens=16, validate=False)
    inline = export(tiny_checkpoint, tmp_path / "inline", cfg, show_progress=False)
    external = export(tiny_checkpoint, tmp_path / "external",
                      ExportConfig(max_seq=32, max_kv=32, max_image_tokens=16, validate=False, external_data=True),
                      show_progress=False)
    manifest = json.loads((external / "export.json").read_text())
    for name in ("vision_encoder", "decoder"):
        onnx_file = external / "onnx" / "fp32" / f"{name}.onnx"
        data_file = onnx_file.with_name(f"{name}.onnx.data")
        assert data_file.is_file() and data_file.stat().st_size > onnx_file.stat().st_size
        assert manifest["components"][name]["external_data"] == data_file.name
        assert relative_external_data_ok(onnx_file)
        assert not (inline / "onnx" / "fp32" / f"{name}.onnx.data").exists()
    # Moving the folder keeps working: external data paths are relative.
    moved = tmp_path / "moved"
    external.rename(moved)
    a, b = session(inline / "onnx" / "fp32" / "decoder.onnx"), session(moved / "onnx" / "fp32" / "decoder.onnx")
    from trt_pipeline.graph.simplify import consistent_sizes, random_feed

    feed = random_feed(a, consistent_sizes(0), seed=1)
    for x, y in zip(a.run(None, feed), b.run(None, feed)):
        assert np.array_equal(x, y)


def test_simplify_reports_node_counts(exported):
    _, out = exported
    manifest = json.loads((out / "export.json").read_text())
    for entry in manifest["components"].values():
        report = entry["simplify"]
        assert report["nodes_after"] <= report["nodes_before"]
        assert report["max_abs_diff"] <= 1e-5
