"""export --workload on real checkpoints' configs: export.json dims and the TensorRT profile set.

The phone-9b preset's config is the real AutoGLM-Phone-9B's (a config-only checkpoint: no
weights are needed to decide the dims), so these are the ranges a real export writes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from trt_pipeline.config import ExportConfig
from trt_pipeline.engine.profiles import parse_dims, parse_tensor_specs, derive_profiles
from trt_pipeline.errors import ConfigError
from trt_pipeline.export.dims import dims_to_json, export_dims
from trt_pipeline.fixtures.checkpoint_factory import write_checkpoint
from trt_pipeline.models.glm4v.config import load_dims
from trt_pipeline.models.glm4v.io_spec import decoder_spec, vision_spec


@pytest.fixture(scope="module")
def phone_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("phone") / "ck", "phone-9b", config_only=True, progress=False)


def _json_dims(ranges, dims):
    try:
        return dims_to_json(ranges, dims.vision.spatial_merge_size)
    except TypeError:  # before the layout module's signature
        return dims_to_json(ranges)


def test_phone_agent_is_the_default_for_the_real_model(phone_config: Path) -> None:
    dims = load_dims(phone_config)
    ranges, workload = export_dims(ExportConfig(), dims, phone_config)
    assert workload.workload == "phone-agent"
    assert ranges["past_sequence_length"].max == 25_479  # + the decoded token = the 25,480 context
    assert ranges["sequence_length"].max == 8192 and ranges["sequence_length"].opt == 4608
    assert ranges["num_image_tokens"].max == 5_000_000 // 784  # one 5 MP image
    assert ranges["num_image_tokens"].min <= 16
    assert ranges["num_patches"].max == 4 * ranges["num_image_tokens"].max
    assert ranges["batch_size"].max == 4
    assert workload.to_json()["sources"]["num_image_tokens"].startswith("workload phone-agent max_pixels")


def test_phone_agent_profiles_prefill_decode(phone_config: Path) -> None:
    dims = load_dims(phone_config)
    ranges, workload = export_dims(ExportConfig(), dims, phone_config)
    parsed = parse_dims(_json_dims(ranges, dims))
    inputs = parse_tensor_specs([t.to_dict() for t in decoder_spec(dims).inputs])
    profiles = {p.name: p for p in derive_profiles("decoder", inputs, parsed, workload_opts=workload.profile_opts)}
    prefill, decode = profiles["prefill"], profiles["decode"]
    embeds = prefill.shapes["inputs_embeds"]
    assert (embeds.min[1], embeds.opt[1], embeds.max[1]) == (1, 4608, 8192)
    assert prefill.shapes["past_key_values.0.key"].max[2] == 0
    past = decode.shapes["past_key_values.0.key"]
    assert decode.shapes["inputs_embeds"].max[1] == 1
    assert (past.min[2], past.opt[2], past.max[2]) == (1, 12288, 25_479)
    if "append" in profiles:  # the multi-token step onto a filled cache
        append = profiles["append"]
        assert append.shapes["inputs_embeds"].opt[1] == 3584
        assert append.shapes["past_key_values.0.key"].opt[2] == 8192
        assert append.shapes["past_key_values.0.key"].min[2] >= 1
    vision_inputs = parse_tensor_specs([t.to_dict() for t in vision_spec(dims).inputs])
    (image,) = derive_profiles("vision_encoder", vision_inputs, parsed)
    assert image.shapes["pixel_values"].max[0] == 4 * (5_000_000 // 784)


def test_screenshot_workload_on_the_small_preset(tmp_path: Path) -> None:
    small = write_checkpoint(tmp_path / "small", "small", config_only=True, progress=False)
    dims = load_dims(small)
    cfg = ExportConfig(workload="phone-agent", max_seq=1024, max_kv=4096, max_pixels=1092 * 2408)
    ranges, workload = export_dims(cfg, dims, small)
    assert ranges["num_image_tokens"].max == 3354  # one 1080x2400 screenshot, not downscaled
    assert workload.sources["sequence_length"] == "flag --max-seq"
    assert workload.sources["num_image_tokens"] == f"flag --max-pixels {1092 * 2408}"


def test_context_beyond_the_model_is_refused(tmp_path: Path) -> None:
    small = write_checkpoint(tmp_path / "small", "small", config_only=True, progress=False)
    with pytest.raises(ConfigError, match="max_position_embeddings 8192"):
        export_dims(ExportConfig(workload="phone-agent"), load_dims(small), small)


def test_export_records_the_workload_and_generate_uses_its_pixel_limit(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """export.json carries the workload (sources, profile opts, max_pixels); loaders read it typed."""
    from PIL import Image

    from trt_pipeline.artifacts.manifests import read_export_manifest
    from trt_pipeline.export.exporter import export
    from trt_pipeline.generate import resolve_source
    from trt_pipeline.models.glm4v.processing import Glm4vProcessing

    out = export(tiny_checkpoint, tmp_path / "out", ExportConfig(
        max_seq=64, max_kv=64, max_pixels=112 * 224, components=("vision_encoder",), validate=False, simplify=False),
        show_progress=False)
    manifest = read_export_manifest(out)
    assert manifest.workload["name"] == "tiny" and manifest.max_pixels == 112 * 224
    assert manifest.workload["sources"]["sequence_length"] == "flag --max-seq"
    assert manifest.profile_opts["prefill"]["sequence_length"] == 64
    assert manifest.dims["num_image_tokens"].max == 112 * 224 // 784
    source = resolve_source(out)
    assert source.max_pixels == 112 * 224
    image = tmp_path / "s.png"
    Image.new("RGB", (1080, 2400), (9, 9, 9)).save(image)
    tokens = Glm4vProcessing(source.hf_dir, max_pixels=source.max_pixels)(["x"], [[image]]).num_image_tokens
    assert tokens <= manifest.dims["num_image_tokens"].max
