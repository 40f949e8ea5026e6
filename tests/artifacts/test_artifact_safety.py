"""Issue 17: never destroy what the tool did not make; integrity before use; readable files.

* a user's folder at ``--out`` survives ``export`` byte for byte, and so does a file at ``--out``;
* ``--overwrite`` replaces an earlier export, a second writer is refused, stale ``.partial`` folders go;
* an edited initializer in an exported ONNX is refused at load (validate, compare, generate), naming the file;
* under umask 022 every file the export writes is readable by group and others.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from typer.testing import CliRunner

from trt_pipeline.artifacts import OutputLayout, atomic_output_dir, output_lock
from trt_pipeline.cli import app
from trt_pipeline.errors import ArtifactIntegrityError, OutputFolderError

runner = CliRunner()
SMALL = ["--max-seq", "16", "--max-kv", "16", "--max-image-tokens", "16", "--max-batch", "1", "--no-simplify"]


def tree_digest(root: Path) -> dict[str, str]:
    """{relative path: sha256} of every file, plus every folder (hidden ones included)."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        out[rel] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
    return out


@pytest.fixture(scope="module")
def small_export(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One validated export written under umask 022 (read-only for the tests below)."""
    out = tmp_path_factory.mktemp("safety") / "export"
    previous = os.umask(0o022)
    try:
        result = runner.invoke(app, ["export", str(tiny_checkpoint), "--out", str(out), *SMALL])
    finally:
        os.umask(previous)
    assert result.exit_code == 0, result.output
    return out


def test_every_written_file_is_readable_by_group_and_others(small_export):
    entries = [p for p in small_export.rglob("*")]
    assert len([p for p in entries if p.is_file()]) >= 8  # export.json, manifests, onnx, tables, hf files, report
    assert OutputLayout(small_export).validation_report.is_file()
    unreadable = [f"{p.relative_to(small_export)} {stat.filemode(p.stat().st_mode)}" for p in [small_export, *entries]
                  if not (p.stat().st_mode & stat.S_IRGRP and p.stat().st_mode & stat.S_IROTH)
                  or (p.is_dir() and not p.stat().st_mode & stat.S_IXOTH)]
    assert unreadable == []


def test_a_user_folder_at_out_survives_export(tiny_checkpoint, tmp_path):
    user = tmp_path / "photos"
    (user / "2024").mkdir(parents=True)
    (user / "notes.txt").write_text("mine")
    (user / "2024" / "a.png").write_bytes(os.urandom(1000))
    before = tree_digest(tmp_path)
    for extra in ([], ["--overwrite"]):
        result = runner.invoke(app, ["export", str(tiny_checkpoint), "--out", str(user), *SMALL, *extra])
        assert result.exit_code == 2, result.output
        assert str(user) in result.output and "--overwrite" in result.output and "Traceback" not in result.output
        assert tree_digest(tmp_path) == before


def test_a_file_at_out_survives_export(tiny_checkpoint, tmp_path):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"precious")
    before = tree_digest(tmp_path)
    result = runner.invoke(app, ["export", str(tiny_checkpoint), "--out", str(target), *SMALL, "--overwrite"])
    assert result.exit_code == 2, result.output
    assert "is an existing file" in result.output and str(target) in result.output
    assert tree_digest(tmp_path) == before


def test_an_earlier_export_is_replaced_only_with_overwrite(small_export, tmp_path):
    out = tmp_path / "export"
    shutil.copytree(small_export, out)
    before = tree_digest(out)
    with pytest.raises(OutputFolderError, match="--overwrite"):
        with atomic_output_dir(out, overwrite=False):
            pass
    assert tree_digest(out) == before
    with atomic_output_dir(out, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("x")
    assert [p.name for p in out.iterdir()] == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # no .old / .partial / .lock left


def test_a_second_writer_is_refused_clearly(tmp_path):
    out = tmp_path / "out"
    with output_lock(out):
        with pytest.raises(OutputFolderError, match="another autoglm-trt process is writing") as info:
            with atomic_output_dir(out):
                pass
        assert str(out) in str(info.value)
    assert not out.exists()


def test_stale_partial_and_old_folders_are_removed_at_the_next_run(tmp_path):
    out = tmp_path / "out"
    stale = [tmp_path / ".out.k1ll3d.partial", tmp_path / ".out.old"]
    for folder in stale:
        folder.mkdir()
        (folder / "half.onnx").write_bytes(b"\0" * 10)
    other = tmp_path / ".other.abc.partial"
    other.mkdir()
    with atomic_output_dir(out) as tmp:
        (tmp / "a.txt").write_text("a")
    assert not any(p.exists() for p in stale)
    assert other.is_dir()  # may belong to a run on another output: reported, not removed
    assert (out / "a.txt").read_text() == "a"


def _edit_initializer(path: Path) -> None:
    model = onnx.load(str(path))
    big = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    big.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(big) * 1.5, big.name))
    onnx.save(model, str(path))


@pytest.fixture
def edited_export(small_export, tmp_path) -> Path:
    out = tmp_path / "edited"
    shutil.copytree(small_export, out)
    _edit_initializer(OutputLayout(out).onnx_path("fp32", "decoder"))
    return out


def test_an_edited_initializer_is_refused_at_load(edited_export, tiny_checkpoint):
    decoder = OutputLayout(edited_export).onnx_path("fp32", "decoder")
    from trt_pipeline.runtime.onnxruntime_runner import ort_component_runners

    with pytest.raises(ArtifactIntegrityError, match="does not match its manifest") as info:
        ort_component_runners(edited_export, "fp32")
    assert str(decoder) in str(info.value)
    ort_component_runners(edited_export, "fp32", verify=False)  # the escape hatch still loads it

    commands = {
        "validate": ["validate", str(edited_export), "--checkpoint", str(tiny_checkpoint)],
        "compare": ["compare", str(edited_export), "--precisions", "fp32", "--max-items", "1", "--no-torch-export",
                    "--no-tokens"],
        "generate": ["generate", str(edited_export), "--backend", "ort", "-p", "hi", "--max-new-tokens", "1"],
    }
    for name, args in commands.items():
        result = runner.invoke(app, args)
        assert result.exit_code == 3, (name, result.output)
        assert "decoder.onnx" in result.output and "does not match its manifest" in result.output, (name, result.output)
        assert "Traceback" not in result.output


def test_edited_embeddings_are_refused_at_load(small_export, tmp_path):
    from trt_pipeline.models.glm4v.generation import HostAssets

    out = tmp_path / "edited"
    shutil.copytree(small_export, out)
    table = OutputLayout(out).embed_tokens
    data = bytearray(table.read_bytes())
    data[-1] ^= 0xFF
    table.write_bytes(bytes(data))
    with pytest.raises(ArtifactIntegrityError, match="embed_tokens.safetensors"):
        HostAssets.from_export_dir(out)


def test_an_edited_initializer_is_refused_at_serve_load(edited_export):
    """`serve` loads the same verified runners: an edited decoder never starts serving."""
    from trt_pipeline.serve.metrics import ServeMetrics
    from trt_pipeline.serve.model import ServeConfig, load_model

    with pytest.raises(ArtifactIntegrityError, match="does not match its manifest") as info:
        load_model(ServeConfig(out=edited_export, backend="ort"), ServeMetrics())
    assert "decoder.onnx" in str(info.value)
