"""``compare --engines``: TensorRT engines join the comparison through the unchanged TensorRT runner.

On a CPU machine: engine files present but no TensorRT -> TensorRTUnavailableError (exit 6), never a
silent skip of what was asked for. On a GPU host (``pytest -m gpu tests/compare``): fp16 engines
built from the fp16 ONNX pass the fp16 gates against transformers.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from trt_pipeline.config import CompareConfig
from trt_pipeline.errors import TensorRTUnavailableError


def _tensorrt_missing() -> str | None:
    from trt_pipeline.engine.tensorrt_import import require_tensorrt

    try:
        require_tensorrt()
    except TensorRTUnavailableError as error:
        return error.render()
    import torch

    return None if torch.cuda.is_available() else "no CUDA build of PyTorch"


def test_engines_without_tensorrt_is_an_error(compare_export, tmp_path):
    if _tensorrt_missing() is None:
        pytest.skip("TensorRT and a GPU are available here")
    from trt_pipeline.compare import compare

    out = tmp_path / "export"
    shutil.copytree(compare_export, out, ignore=shutil.ignore_patterns("reports"))
    (out / "engines").mkdir()
    (out / "engines" / "decoder.fp32.engine").write_bytes(b"not an engine")
    with pytest.raises(TensorRTUnavailableError):
        compare(out, CompareConfig(precisions=("fp32",), engines=True, report_dir=tmp_path / "r"), show_progress=False)


@pytest.mark.gpu
def test_fp16_engines_pass_the_fp16_gates(compare_export, tmp_path):
    reason = _tensorrt_missing()
    if reason:
        pytest.skip(f"GPU test needs TensorRT and a CUDA GPU: {reason}")
    from trt_pipeline.compare import compare
    from trt_pipeline.config import Fp16Config
    from trt_pipeline.engine.builder import build_engines
    from trt_pipeline.engine.options import BuildConfig
    from trt_pipeline.quantize.precision import make_fp16

    out = tmp_path / "export"
    shutil.copytree(compare_export, out, ignore=shutil.ignore_patterns("reports"))
    make_fp16(out, Fp16Config(), show_progress=False)
    build_engines(BuildConfig(out, precision="fp16", workspace=2 << 30, opt_level=3), show_progress=False)
    report = compare(out, CompareConfig(precisions=("fp16",), engines=True, max_items=4, report_dir=tmp_path / "r"),
                     show_progress=False)
    assert report.passed
    assert "trt-fp16" in [b["name"] for b in report.backends]
    assert report.stats("trt-fp16", "logits").cosine >= 0.9999
    assert report.token_agreement("trt-fp16").exact_match_rate >= 0.9
    assert Path(report.files["markdown"]).read_text().count("trt-fp16") >= 3
