"""Bad input to export: clear message, non-zero exit, no partial output folder."""

from __future__ import annotations

import json
import shutil
from collections import namedtuple

import pytest
from typer.testing import CliRunner

from trt_pipeline.cli import app

runner = CliRunner()


def leftovers(parent, name):
    return [p for p in parent.iterdir() if name in p.name] if parent.exists() else []


def run_export(args):
    return runner.invoke(app, ["export", *args, "--no-validate"])


def test_missing_checkpoint(tmp_path):
    result = run_export([str(tmp_path / "nope"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "does not exist" in result.output and str(tmp_path / "nope") in result.output
    assert leftovers(tmp_path, "out") == []


def test_other_architecture(tiny_checkpoint, tmp_path):
    ck = tmp_path / "ck"
    shutil.copytree(tiny_checkpoint, ck)
    config = json.loads((ck / "config.json").read_text())
    config["model_type"] = "llava"
    (ck / "config.json").write_text(json.dumps(config))
    result = run_export([str(ck), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "model_type is 'llava'" in result.output and "config.json" in result.output
    assert leftovers(tmp_path, "out") == []


def test_range_beyond_max_position_embeddings(tiny_checkpoint, tmp_path):
    result = run_export([str(tiny_checkpoint), "--out", str(tmp_path / "out"), "--max-seq", "4000", "--max-kv", "4000"])
    assert result.exit_code == 2
    assert "exceeds the model's max_position_embeddings 4096" in result.output
    assert leftovers(tmp_path, "out") == []


def test_not_enough_disk(tiny_checkpoint, tmp_path, monkeypatch):
    import trt_pipeline.export.writer as writer

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(writer.shutil, "disk_usage", lambda _: usage(10**9, 10**9 - 1000, 1000))
    result = run_export([str(tiny_checkpoint), "--out", str(tmp_path / "out")])
    assert result.exit_code == 8
    assert "not enough free disk" in result.output
    assert leftovers(tmp_path, "out") == []


def test_failure_midway_leaves_nothing(tiny_checkpoint, tmp_path, monkeypatch):
    import trt_pipeline.export.onnx_export as onnx_export

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(onnx_export, "check_and_infer", boom)
    with pytest.raises(KeyboardInterrupt):
        from trt_pipeline.config import ExportConfig
        from trt_pipeline.export.exporter import export

        export(tiny_checkpoint, tmp_path / "out", ExportConfig(validate=False), show_progress=False)
    assert leftovers(tmp_path, "out") == []


def test_unknown_component(tiny_checkpoint, tmp_path):
    result = run_export([str(tiny_checkpoint), "--out", str(tmp_path / "out"), "--components", "audio"])
    assert result.exit_code == 2 and "unknown component" in result.output


def test_validate_fails_on_corrupt_onnx(tiny_checkpoint, tmp_path):
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from trt_pipeline.config import ExportConfig
    from trt_pipeline.export.exporter import export

    out = export(tiny_checkpoint, tmp_path / "out", ExportConfig(max_seq=16, max_kv=16, max_image_tokens=16,
                                                                 validate=False), show_progress=False)
    path = out / "onnx" / "fp32" / "decoder.onnx"
    model = onnx.load(str(path))
    big = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    big.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(big) * 1.5, big.name))
    onnx.save(model, str(path))
    # --no-verify: this test is about the numbers; the sha256 check would refuse the edited file first
    result = runner.invoke(app, ["validate", str(out), "--checkpoint", str(tiny_checkpoint), "--no-verify"])
    assert result.exit_code == 5
    assert "decoder output `logits`" in result.output or "decoder output `present.*`" in result.output


def test_validate_without_a_checkpoint_anywhere_names_export_json_and_the_flag(tiny_export, tmp_path):
    """export.json that names no source (copied from another machine, hand-edited) and no --checkpoint."""
    copy = tmp_path / "export"
    shutil.copytree(tiny_export, copy)
    manifest_path = copy / "export.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["checkpoint"].pop("path", None)
    manifest_path.write_text(json.dumps(manifest))
    before = sorted(p.name for p in copy.rglob("*"))
    result = runner.invoke(app, ["validate", str(copy)])
    assert result.exit_code == 2, result.output
    assert "names no source checkpoint" in result.output and str(manifest_path) in result.output
    assert "--checkpoint" in result.output
    assert sorted(p.name for p in copy.rglob("*")) == before  # no report written
