"""`autoglm-trt bundle` / `bundle verify` / `build --print-trtexec` on the tiny export (docs/artifacts.md layout)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trt_pipeline.bundle.make import make_bundle
from trt_pipeline.bundle.targets import BUNDLE_PRECISIONS
from trt_pipeline.bundle.trtexec import TRTEXEC_FLAGS
from trt_pipeline.bundle.verify import BundleIntegrityError, verify_bundle
from trt_pipeline.cli import app

HOST_FILES = {"hf/tokenizer.json": "{}", "hf/chat_template.jinja": "{{ messages }}", "hf/preprocessor_config.json": "{}",
              "hf/config.json": "{}", "embeddings/embed_tokens.safetensors": "tables"}


@pytest.fixture
def export(make_export_dir) -> Path:
    export_dir = make_export_dir(external_data=True)
    for name, text in HOST_FILES.items():
        (export_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (export_dir / name).write_text(text)
    return export_dir


def commands_of(bundle: Path) -> list[list[str]]:
    """The trtexec argv lines of build.sh."""
    lines = (bundle / "build.sh").read_text().splitlines()
    return [shlex.split(line.replace('"$TRTEXEC"', "trtexec")) for line in lines if line.startswith('"$TRTEXEC"')]


@pytest.mark.parametrize("target, precision, typed_flag", [("jetson-orin-jp6", "fp16", True), ("x86-trt11", "int8", False)])
def test_bundle_for_a_target_holds_what_the_board_needs(export, tmp_path, target, precision, typed_flag):
    made = make_bundle(export, target, tmp_path / "bundle", precision=precision)
    files = set(made.files)
    source = sorted(p.relative_to(export).as_posix() for p in (export / "onnx" / precision).iterdir())
    assert {f"export/{name}" for name in source} <= files  # graphs, external data, manifest, caches
    assert {f"export/onnx/{precision}/{c}.onnx.data" for c in ("vision_encoder", "decoder")} <= files
    assert {f"export/{name}" for name in HOST_FILES} | {"export/export.json", f"export/onnx/{precision}/manifest.json"} <= files
    assert {"build.sh", "README.md", "constraints.txt", "bundle.json"} <= files
    assert not any("/fp32/" in f or "engines" in f for f in files)  # only the shipped precision, no engines
    constraints = (made.path / "constraints.txt").read_text()
    assert ("tensorrt>=10.3,<10.4" in constraints) if target == "jetson-orin-jp6" else ("tensorrt-cu13>=11.0,<12" in constraints)
    assert verify_bundle(made.path) == len(files)
    with tarfile.open(made.tar_path) as tar:
        assert f"bundle/{made.files[0]}" in tar.getnames() and "bundle/SHA256SUMS" in tar.getnames()
    commands = commands_of(made.path)
    assert [c[1] for c in commands] == [f"--onnx=export/onnx/{precision}/vision_encoder.onnx",
                                        f"--onnx=export/onnx/{precision}/decoder.onnx"]
    for argv in commands:
        flags = {arg.split("=", 1)[0] for arg in argv[1:]}
        assert flags <= TRTEXEC_FLAGS, flags - TRTEXEC_FLAGS  # only documented trtexec flags
        assert ("--stronglyTyped" in flags) is typed_flag and "--fp16" not in flags
    decoder = commands[1]
    assert sum(a.startswith("--minShapes=") for a in decoder) == 3  # prefill, decode, append profiles
    assert sum(a.startswith("--maxShapes=") for a in decoder) == 3
    assert any(a.startswith("--minShapes=inputs_embeds:1x2x8") for a in decoder)  # the append profile
    workspace = {"jetson-orin-jp6": "2048M", "x86-trt11": "8192M"}[target]
    assert f"--memPoolSize=workspace:{workspace}" in decoder and "--timingCacheFile=export/engines/timing.cache" in decoder


def test_bundle_verify_names_a_flipped_byte(export, tmp_path):
    made = make_bundle(export, "jetson-thor-jp7", tmp_path / "bundle")
    runner = CliRunner()
    ok = runner.invoke(app, ["bundle", "verify", str(made.path)])
    assert ok.exit_code == 0 and "files match SHA256SUMS" in ok.output
    data = made.path / "export" / "onnx" / "fp16" / "decoder.onnx.data"
    blob = bytearray(data.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    data.write_bytes(bytes(blob))
    with pytest.raises(BundleIntegrityError, match="bundle file export/onnx/fp16/decoder.onnx.data does not match"):
        verify_bundle(made.path)
    bad = runner.invoke(app, ["bundle", "verify", str(made.path)])
    assert bad.exit_code == 3 and "decoder.onnx.data" in bad.output


def test_bundle_cli_refuses_an_unknown_target_and_an_existing_folder(export, tmp_path):
    runner = CliRunner()
    made = runner.invoke(app, ["bundle", str(export), "--target", "x86-trt10", "--out", str(tmp_path / "b")])
    assert made.exit_code == 0, made.output
    again = runner.invoke(app, ["bundle", str(export), "--target", "x86-trt10", "--out", str(tmp_path / "b")])
    assert again.exit_code == 2 and "already exists" in again.output
    unknown = runner.invoke(app, ["bundle", str(export), "--target", "pi5", "--out", str(tmp_path / "c")])
    assert unknown.exit_code == 2


def stub(folder: Path, name: str, log: Path) -> None:
    """An executable that appends its argv (one shell-quoted line) to ``log``."""
    script = folder / name
    script.write_text(f'#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done > "{log}.$$"\necho "$$" >> "{log}"\n')
    script.chmod(0o755)


def calls(log: Path) -> list[list[str]]:
    return [log.with_name(f"{log.name}.{pid}").read_text().splitlines() for pid in log.read_text().split()]


def run_build_sh(bundle: Path, path_dirs: list[Path]) -> subprocess.CompletedProcess:
    env = {"PATH": os.pathsep.join([*map(str, path_dirs), "/usr/bin", "/bin"]), "HOME": str(bundle)}
    assert shutil.which("autoglm-trt", path=env["PATH"]) in (None, str(path_dirs[0] / "autoglm-trt"))
    return subprocess.run(["bash", str(bundle / "build.sh")], env=env, capture_output=True, text=True, timeout=60)


def test_build_sh_runs_autoglm_trt_build_when_installed(export, tmp_path):
    made = make_bundle(export, "jetson-orin-jp6", tmp_path / "bundle")
    bin_dir, log = tmp_path / "bin", tmp_path / "autoglm.log"
    bin_dir.mkdir()
    stub(bin_dir, "autoglm-trt", log)
    stub(bin_dir, "trtexec", tmp_path / "trtexec.log")
    result = run_build_sh(made.path, [bin_dir])
    assert result.returncode == 0, result.stderr
    assert calls(log) == [["build", str(made.path / "export"), "--fp16", "--workspace", "2GiB"]]
    assert not (tmp_path / "trtexec.log").exists()


def test_build_sh_falls_back_to_trtexec(export, tmp_path):
    made = make_bundle(export, "jetson-orin-jp6", tmp_path / "bundle")
    bin_dir, log = tmp_path / "bin", tmp_path / "trtexec.log"
    bin_dir.mkdir()
    stub(bin_dir, "trtexec", log)
    result = run_build_sh(made.path, [bin_dir])
    assert result.returncode == 0, result.stderr
    assert "building with" in result.stderr
    assert calls(log) == [argv[1:] for argv in commands_of(made.path)]
    assert (made.path / "export" / "engines").is_dir()


def test_build_sh_without_either_tool_says_what_to_install(export, tmp_path):
    made = make_bundle(export, "x86-trt11", tmp_path / "bundle")
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_build_sh(made.path, [empty])
    assert result.returncode == 6 and "gpu-cu13" in result.stderr


def test_build_print_trtexec_needs_no_tensorrt(export):
    result = CliRunner().invoke(app, ["build", str(export), "--int8", "--workspace", "1GiB", "--print-trtexec"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("trtexec --onnx=") for line in lines)
    assert "--memPoolSize=workspace:1024M" in lines[1] and "--stronglyTyped" in lines[1]
    eleven = CliRunner().invoke(app, ["build", str(export), "--int8", "--print-trtexec", "--trtexec-tensorrt", "11"])
    assert eleven.exit_code == 0 and "--stronglyTyped" not in eleven.output


def _tree_digest(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("kind", ["user folder", "file"])
def test_bundle_never_replaces_what_it_did_not_write(export, tmp_path, kind):
    """`bundle --out` onto a user's folder or file: exit 2, the folder/file byte for byte as before, no .tar."""
    if kind == "file":
        target = tmp_path / "notes.txt"
        target.write_text("my notes")
        before = target.read_bytes()
    else:
        target = tmp_path / "mine"
        (target / "sub").mkdir(parents=True)
        (target / "a.txt").write_text("keep me")
        (target / "sub" / "b.bin").write_bytes(os.urandom(64))
        before = _tree_digest(target)
    result = CliRunner().invoke(app, ["bundle", str(export), "--target", "x86-trt11", "--out", str(target)])
    assert result.exit_code == 2, result.output
    assert str(target) in result.output and "Traceback" not in result.output
    assert (target.read_bytes() if kind == "file" else _tree_digest(target)) == before
    assert not target.with_name(target.name + ".tar").exists()


@pytest.mark.parametrize("precision", BUNDLE_PRECISIONS)
def test_bundle_ships_every_registered_precision(export, tmp_path, precision):
    """Every ONNX variant `autoglm-trt precision` makes (int4 too, once registered) can be bundled."""
    made = make_bundle(export, "jetson-orin-jp6", tmp_path / "bundle", precision=precision)
    assert {f"export/onnx/{precision}/{c}.onnx" for c in ("vision_encoder", "decoder")} <= set(made.files)
    assert [c[1] for c in commands_of(made.path)] == [f"--onnx=export/onnx/{precision}/vision_encoder.onnx",
                                                      f"--onnx=export/onnx/{precision}/decoder.onnx"]
    assert f"--{precision}" in (made.path / "build.sh").read_text()
    result = CliRunner().invoke(app, ["bundle", str(export), "--target", "x86-trt11", "--precision", precision,
                                      "--out", str(tmp_path / "cli")])
    assert result.exit_code == 0, result.output
    assert "fp32" not in BUNDLE_PRECISIONS
