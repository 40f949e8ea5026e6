"""`bundle` on the real tiny export (transformers checkpoint -> export -> precision fp16), for two targets."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from trt_pipeline.bundle.make import make_bundle
from trt_pipeline.bundle.targets import TARGETS
from trt_pipeline.bundle.trtexec import FLAG_SYNTAX, documented_flags
from trt_pipeline.bundle.verify import BundleIntegrityError, verify_bundle
from trt_pipeline.config.build import parse_shapes
from trt_pipeline.engine.builder import plan_build
from trt_pipeline.engine.options import BuildConfig

from test_bundle import commands_of


@pytest.fixture(scope="module")
def fp16_tiny_export(tiny_export: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from trt_pipeline.config import Fp16Config
    from trt_pipeline.quantize.precision import make_fp16

    out = tmp_path_factory.mktemp("bundle") / "export"
    shutil.copytree(tiny_export, out, ignore=shutil.ignore_patterns("fp16", "int8"))
    make_fp16(out, Fp16Config(calib_samples=2, heldout_samples=2), show_progress=False)
    return out


@pytest.mark.parametrize("target", ["jetson-orin-jp6", "x86-trt11"])
def test_bundle_of_the_tiny_export_verifies_and_names_a_flipped_byte(fp16_tiny_export, tmp_path, target):
    made = make_bundle(fp16_tiny_export, target, tmp_path / "bundle", precision="fp16")
    files = set(made.files)
    assert {"export/export.json", "export/onnx/fp16/decoder.onnx", "export/onnx/fp16/vision_encoder.onnx",
            "build.sh", "README.md", "constraints.txt"} <= files
    assert any(f.startswith("export/hf/") and f.endswith("tokenizer.json") for f in files)
    assert any(f.startswith("export/hf/") and "chat_template" in f for f in files)
    assert verify_bundle(made.path) == len(files)

    # build.sh's trtexec commands: documented flags of the target's TensorRT, the build's own profiles
    plan = plan_build(BuildConfig(fp16_tiny_export, precision="fp16"))
    commands = commands_of(made.path)
    assert len(commands) == len(plan.components) == 2
    for component, argv in zip(plan.components, commands):
        for arg in argv[1:]:
            flag, _, value = arg.partition("=")
            assert flag in documented_flags(TARGETS[target].tensorrt), flag
            assert FLAG_SYNTAX[flag] is None or re.fullmatch(FLAG_SYNTAX[flag], value), arg
        for index, profile in enumerate(component.profiles):
            at = argv.index(f"--profile={index}")
            assert parse_shapes(argv[at + 3].split("=", 1)[1]) == {n: r.max for n, r in profile.shapes.items()}
    assert [p.name for p in plan.components[1].profiles] == ["prefill", "decode", "append"]

    graph = made.path / "export" / "onnx" / "fp16" / "decoder.onnx"
    blob = bytearray(graph.read_bytes())
    blob[len(blob) // 3] ^= 0x20
    graph.write_bytes(bytes(blob))
    with pytest.raises(BundleIntegrityError, match="export/onnx/fp16/decoder.onnx does not match"):
        verify_bundle(made.path)
