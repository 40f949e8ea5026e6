"""Requests outside export.json's ranges are refused on ONNX Runtime, as TensorRT's profiles would.

Each refusal names the limit, export.json and the export flag that raises it, and happens before
any runner is called (the ORT session would otherwise accept any size on a dynamic axis).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from trt_pipeline.artifacts.manifests import read_export_manifest
from trt_pipeline.cli import app
from trt_pipeline.errors import ShapeError
from trt_pipeline.models.glm4v.contract import ExportContract


@pytest.fixture(scope="module")
def contract(compare_export: Path) -> ExportContract:
    return ExportContract.from_manifest(read_export_manifest(compare_export))


def test_limits_come_from_export_json(contract: ExportContract, compare_export: Path) -> None:
    dims = read_export_manifest(compare_export).dims
    assert contract.max_past == dims["past_sequence_length"].max
    assert contract.max_chunk == dims["sequence_length"].max
    assert contract.max_batch == dims["batch_size"].max


@pytest.mark.parametrize(
    ("call", "flag"),
    [
        (lambda c: c.check_step(c.max_batch + 1, 1, 0), "--max-batch"),
        (lambda c: c.check_step(1, c.max_chunk + 1, 0), "--max-seq"),
        (lambda c: c.check_step(1, 1, c.max_past + 1), "--max-kv"),
        (lambda c: c.check_request(1, c.max_past, 8), "--max-kv"),
        (lambda c: c.check_image_tokens([c.max_image_tokens + 1]), "--max-pixels"),
    ],
)
def test_each_limit_is_refused_naming_the_flag(contract: ExportContract, call, flag: str) -> None:
    with pytest.raises(ShapeError) as info:
        call(contract)
    message = str(info.value)
    assert flag in message and "export.json" in message


def test_inside_the_limits_passes(contract: ExportContract) -> None:
    contract.check_step(contract.max_batch, contract.max_chunk, contract.max_past)
    contract.check_request(1, contract.max_past - 6, 8)


def test_generate_ort_refuses_a_too_long_request(compare_export: Path) -> None:
    limit = read_export_manifest(compare_export).dims["past_sequence_length"].max
    result = CliRunner().invoke(app, ["generate", str(compare_export), "--backend", "ort",
                                      "--prompt", "tap " * (limit + 8), "--max-new-tokens", "4"])
    assert result.exit_code == ShapeError.exit_code, result.output
    assert "--max-kv" in result.output and "Traceback" not in result.output
