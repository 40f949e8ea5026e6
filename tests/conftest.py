"""Shared test fixtures.

``tiny_checkpoint`` is a deterministic random GLM-4.1V checkpoint at the ``tiny`` preset (a few MB,
made once per test session with transformers): weights, tokenizer + chat template, image processor.
Treat it as read-only; tests that modify a checkpoint copy it first.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``write_checkpoint(..., preset="tiny", seed=0)``: float32, one model.safetensors."""
    from trt_pipeline.fixtures.checkpoint_factory import write_checkpoint

    return write_checkpoint(tmp_path_factory.mktemp("checkpoints") / "tiny", preset="tiny", seed=0)


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The committed ``trained`` fixture (peaked distributions), copied: for token-agreement tests."""
    from trt_pipeline.fixtures.checkpoint_factory import write_checkpoint

    return write_checkpoint(tmp_path_factory.mktemp("checkpoints") / "trained", preset="trained")


# Parity variants: two configs x two seeds. "gqa8" has 8 query heads over 1 KV head, another
# mrope section and a 6x6 vision position table with 2 vision heads.
GQA8_OVERRIDES = {
    "text_num_attention_heads": 8,
    "text_num_key_value_heads": 1,
    "mrope_section": [2, 1, 1],
    "vision_num_heads": 2,
    "image_size": 84,
}
PARITY_VARIANTS = {
    "tiny-seed0": {"seed": 0, "overrides": {}},
    "tiny-seed1": {"seed": 1, "overrides": {}},
    "gqa8-seed2": {"seed": 2, "overrides": GQA8_OVERRIDES},
    "gqa8-seed3": {"seed": 3, "overrides": GQA8_OVERRIDES},
}


@pytest.fixture(scope="session", params=sorted(PARITY_VARIANTS))
def parity_checkpoint(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny checkpoints of two configs and two seeds each (for parity tests)."""
    from trt_pipeline.fixtures.checkpoint_factory import write_checkpoint

    variant = PARITY_VARIANTS[request.param]
    out = tmp_path_factory.mktemp("parity") / request.param
    return write_checkpoint(out, preset="tiny", seed=variant["seed"], overrides=variant["overrides"])


@pytest.fixture(scope="session")
def tiny_fused_export(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tiny_export``'s twin with ``--decoder-ops fused`` (opset 23 Attention/RotaryEmbedding/RMSNormalization),
    same ranges, validated against transformers like every export. Read-only."""
    from trt_pipeline.config import ExportConfig
    from trt_pipeline.export.exporter import export

    out = tmp_path_factory.mktemp("exports") / "tiny-fused"
    cfg = ExportConfig(max_seq=96, max_kv=128, max_image_tokens=64, decoder_ops="fused")
    return export(tiny_checkpoint, out, cfg, show_progress=False)


@pytest.fixture(scope="session")
def tiny_inplace_export(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tiny_fused_export``'s twin with ``--kv-cache inplace`` (each cache tensor ``[B, past + S, kv * D]``,
    updated in place by ScatterElements), same ranges, validated against transformers. Read-only."""
    from trt_pipeline.config import ExportConfig
    from trt_pipeline.export.exporter import export

    out = tmp_path_factory.mktemp("exports") / "tiny-inplace"
    cfg = ExportConfig(max_seq=96, max_kv=128, max_image_tokens=64, decoder_ops="fused", kv_cache="inplace")
    return export(tiny_checkpoint, out, cfg, show_progress=False)


@pytest.fixture(scope="session")
def tiny_ort_export(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tiny_fused_export``'s twin with ``--decoder-ops onnxruntime`` (com.microsoft GroupQueryAttention /
    SkipSimplifiedLayerNormalization, a shared ``[B, kv, T, D]`` cache), same ranges, validated against
    transformers like every export. Read-only."""
    from trt_pipeline.config import ExportConfig
    from trt_pipeline.export.exporter import export

    out = tmp_path_factory.mktemp("exports") / "tiny-onnxruntime"
    cfg = ExportConfig(max_seq=96, max_kv=128, max_image_tokens=64, decoder_ops="onnxruntime")
    return export(tiny_checkpoint, out, cfg, show_progress=False)


#: the export settings of ``compare_export`` and its streamed twin ``streamed_export``
COMPARE_CFG = dict(max_batch=2, max_seq=128, max_kv=128, validate=False)


@pytest.fixture(scope="session")
def compare_export(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """fp32 export of ``tiny_checkpoint`` for the compare tests (small ranges, no validation grid).

    Read-only: tests that corrupt a model copy the folder first.
    """
    from trt_pipeline.config import ExportConfig
    from trt_pipeline.export.exporter import export

    return export(tiny_checkpoint, tmp_path_factory.mktemp("compare") / "export", ExportConfig(**COMPARE_CFG),
                  show_progress=False)


@pytest.fixture(scope="session")
def streamed_export(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``compare_export``'s twin exported the way the real 9B is: weight-free trace, streamed weights
    (``Linear`` weights reach their MatMul through a Transpose). Read-only."""
    from trt_pipeline.config import ExportConfig
    from trt_pipeline.export.exporter import export

    out = tmp_path_factory.mktemp("streamed") / "export"
    return export(tiny_checkpoint, out, ExportConfig(streaming=True, **COMPARE_CFG), show_progress=False)


@pytest.fixture(scope="session")
def tiny_export(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny checkpoint exported once per session (fp32 ONNX, simplified and validated).

    Ranges: max_seq 96, max_kv 128, max_image_tokens 64 (the tiny image processor's largest image).
    Read-only: tests that write precision variants copy it first (see ``tests/quantize``).
    """
    from trt_pipeline.config import ExportConfig
    from trt_pipeline.export.exporter import export

    out = tmp_path_factory.mktemp("exports") / "tiny"
    return export(tiny_checkpoint, out, ExportConfig(max_seq=96, max_kv=128, max_image_tokens=64), show_progress=False)
