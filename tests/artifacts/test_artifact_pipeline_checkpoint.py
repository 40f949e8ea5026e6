"""A pipeline run on the built-in checkpoint keeps that checkpoint once (in OUT/hf), not twice."""

from __future__ import annotations

from trt_pipeline.artifacts import OutputLayout, read_export_manifest
from trt_pipeline.config import PipelineConfig
from trt_pipeline.pipeline import run_pipeline
from trt_pipeline.config import parse_pipeline_config


def test_builtin_checkpoint_lives_in_hf_only(tmp_path):
    out = tmp_path / "demo"
    cfg = parse_pipeline_config({
        "pipeline": {"out": str(out), "skip": ["fp16", "int8", "build", "compare", "bench"]},
        "export": {"max_batch": 1, "max_seq": 16, "max_kv": 16, "max_image_tokens": 16,
                   "simplify": False, "validate": False},
    })
    assert isinstance(cfg, PipelineConfig) and cfg.checkpoint is None
    first = run_pipeline(cfg, show_progress=False)
    assert {"checkpoint", "export", "report"} <= set(first.ran)
    layout = OutputLayout(out)
    assert not (out / "checkpoint").exists()
    assert (layout.hf_dir / "model.safetensors").is_file() and (layout.hf_dir / "tokenizer.json").is_file()
    assert read_export_manifest(out).checkpoint_path == layout.hf_dir.resolve()
    second = run_pipeline(cfg, show_progress=False)
    assert second.ran == [] and {"checkpoint", "export", "report"} <= set(second.up_to_date)
