"""The generated trtexec commands against the flags trtexec documents (NVIDIA/TensorRT sampleOptions.cpp)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from trt_pipeline.bundle.targets import TARGETS
from trt_pipeline.bundle.trtexec import (
    FLAG_SYNTAX,
    TENSORRT_LINES,
    TRTEXEC_FLAGS,
    TRTEXEC_RELEASES,
    documented_flags,
    hardware_modes,
    pool_size,
    trtexec_commands,
)
from trt_pipeline.config.build import PRECISIONS, parse_shapes
from trt_pipeline.engine.builder import plan_build
from trt_pipeline.engine.options import BuildConfig
from trt_pipeline.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]

#: Build options the generator turns into flags (each variant exercises other flags).
VARIANTS = [
    {},
    {"workspace": 3 << 29, "opt_level": 5, "version_compatible": True, "hardware_compat": "ampere+"},
    {"workspace": 1536 << 10, "opt_level": 0, "device_index": 1},
]


def split(argv: list[str]) -> list[tuple[str, str | None]]:
    return [(a.partition("=")[0], a.partition("=")[2] if "=" in a else None) for a in argv[1:]]


@pytest.mark.parametrize("target", sorted(TARGETS))
@pytest.mark.parametrize("precision", [p for p in PRECISIONS if p != "fp32"])  # int4 too, once it exists
@pytest.mark.parametrize("variant", range(len(VARIANTS)))
def test_every_emitted_flag_is_documented_for_the_targets_tensorrt(export_dir, target, precision, variant):
    tensorrt = TARGETS[target].tensorrt
    cfg = BuildConfig(export_dir, precision=precision, **VARIANTS[variant])
    plan = plan_build(cfg)
    commands = trtexec_commands(plan, cfg, tensorrt=tensorrt)
    allowed = documented_flags(tensorrt)
    for component, argv in zip(plan.components, commands):
        pairs = split(argv)
        for flag, value in pairs:
            assert flag in allowed and flag in TRTEXEC_FLAGS, (target, flag)
            syntax = FLAG_SYNTAX[flag]
            assert (value is None) if syntax is None else re.fullmatch(syntax, value), (flag, value)
        flags = [flag for flag, _ in pairs]
        assert len(flags) == len(set(flags) - {"--profile", "--minShapes", "--optShapes", "--maxShapes"}) + 4 * len(
            component.profiles)  # nothing else repeats
        # each profile: --profile=N immediately followed by its min/opt/max triple, equal to the build's profile
        for index, profile in enumerate(component.profiles):
            at = argv.index(f"--profile={index}")
            triple = {a.split("=", 1)[0]: parse_shapes(a.split("=", 1)[1]) for a in argv[at + 1:at + 4]}
            assert set(triple) == {"--minShapes", "--optShapes", "--maxShapes"}
            for kind in ("min", "opt", "max"):
                assert triple[f"--{kind}Shapes"] == {n: tuple(getattr(r, kind)) for n, r in profile.shapes.items()}
        assert ("--stronglyTyped" in flags) is (TARGETS[target].tensorrt_major < 11)
        assert "--noTF32" in flags and "--skipInference" in flags and not {"--fp16", "--int8"} & set(flags)
        if cfg.workspace is not None:
            size = dict(pairs)["--memPoolSize"].removeprefix("workspace:")
            assert float(size[:-1]) * (1 << 20) == cfg.workspace  # exact, in trtexec's MiB units


def test_memory_pool_sizes_are_exact_in_trtexec_units():
    assert pool_size(2 << 30) == "2048M" and pool_size(1536 << 10) == "1.5M"
    for nbytes in (1, 1000, 4_000_000_000, (8 << 30) + 512):
        assert int(float(pool_size(nbytes)[:-1]) * (1 << 20)) == nbytes  # trtexec rounds down to bytes


def test_flags_a_release_lacks_are_refused(export_dir):
    cfg = BuildConfig(export_dir, precision="fp16", hardware_compat="same-cc")
    with pytest.raises(ConfigError, match="TensorRT 10.3 has no --hardwareCompatibilityLevel=sameComputeCapability"):
        trtexec_commands(plan_build(cfg), cfg, tensorrt="10.3")
    assert "sameComputeCapability" in hardware_modes("11")
    legacy = BuildConfig(export_dir, precision="int8", legacy_precision_flags=True)
    with pytest.raises(ConfigError, match="'--fp16' is not a flag trtexec of TensorRT 11"):
        trtexec_commands(plan_build(legacy), legacy, tensorrt="11")
    argv = trtexec_commands(plan_build(legacy), legacy, tensorrt="10.3")[1]
    assert "--fp16" in argv and "--int8" in argv and any(a.startswith("--calib=") for a in argv)
    assert "--calibProfile=2" in argv  # the decoder's last profile, as CreateConfig calibrates


def test_the_table_names_its_source_and_covers_every_target():
    for ref, release in TRTEXEC_RELEASES.items():
        assert release.ref == ref and re.fullmatch(r"[0-9a-f]{40}", release.commit)
    assert {target.tensorrt for target in TARGETS.values()} <= set(TENSORRT_LINES)
    assert {"--fp16", "--int8", "--calib"} <= documented_flags("10.3")
    assert not {"--fp16", "--int8", "--calib", "--int4"} & documented_flags("11")  # removed in TensorRT 11.0


@pytest.mark.skipif(not os.environ.get("TENSORRT_REPO"), reason="set TENSORRT_REPO to a clone of NVIDIA/TensorRT")
def test_table_matches_the_tensorrt_sources():
    """Regenerate the lists from sampleOptions.cpp: every flag in the table is documented at that commit."""
    repo = os.environ["TENSORRT_REPO"]
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "trtexec_flags.py"), "--repo", repo, *TRTEXEC_RELEASES],
                         check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        head, flags = line.split(": ")
        ref, commit = head.split()
        release = TRTEXEC_RELEASES[ref]
        assert commit == release.commit
        assert release.flags <= set(flags.split()), release.flags - set(flags.split())
        for absent in {"--fp16", "--int8", "--int4", "--calib", "--calibProfile"} - release.flags:
            assert absent not in flags.split()
