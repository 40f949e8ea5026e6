"""Without TensorRT or a GPU every TensorRT command fails at once with one line: what is missing and how to get it.

This machine genuinely has neither the ``tensorrt`` wheel nor a GPU; the tests also force both
conditions so they hold on any machine.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from trt_pipeline.cli import app
from trt_pipeline.engine import tensorrt_import
from trt_pipeline.engine.tensorrt_import import (
    TensorRTVersion,
    detect_gpu,
    detect_shim,
    family_for,
    import_tensorrt,
    require_tensorrt,
)
from trt_pipeline.errors import TensorRTUnavailableError

runner = CliRunner()


@pytest.fixture
def no_tensorrt(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` raises ImportError


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(tensorrt_import, "GPU_PROBES", (lambda index: None,))


def assert_one_line_with_remedy(text: str) -> None:
    assert "\n" not in text.strip(), text
    assert "docker build -t autoglm-trt:gpu ." in text
    assert "pip install 'autoglm-trt[gpu-cu12]'" in text and "[gpu-cu13]" in text and "[cuda12]" in text


def test_import_tensorrt_names_what_is_missing_and_how_to_get_it(no_tensorrt):
    with pytest.raises(TensorRTUnavailableError) as info:
        import_tensorrt()
    assert info.value.exit_code == 6
    assert "TensorRT is not installed" in info.value.render()
    assert_one_line_with_remedy(info.value.render())


def test_no_gpu_is_one_line(no_gpu):
    with pytest.raises(TensorRTUnavailableError, match="no CUDA GPU found") as info:
        detect_gpu()
    assert_one_line_with_remedy(info.value.render())
    assert "--gpus all" in info.value.render()


def test_tensorrt_present_but_no_gpu(monkeypatch, no_gpu, fake_trt):
    monkeypatch.setitem(sys.modules, "tensorrt", fake_trt)
    with pytest.raises(TensorRTUnavailableError, match="no CUDA GPU found"):
        require_tensorrt()


def test_jetson_gpu_is_found_through_cuda_python_without_cuda_torch(monkeypatch, fake_trt, orin_cuda_python):
    """Review failure 4: JetPack has TensorRT and CUDA but no CUDA torch; cuda-python (the `cuda12`
    extra) is enough for detect_gpu, device selection and therefore `build`."""
    cudart = orin_cuda_python
    monkeypatch.setitem(sys.modules, "tensorrt", fake_trt)
    assert tensorrt_import._probe_torch(0) is None  # CPU-only torch here, as on a Jetson without the CUDA wheel
    ctx = require_tensorrt()
    assert (ctx.gpu.name, ctx.gpu.compute_capability, ctx.gpu.cuda_version) == ("Orin", "8.7", "12.6")
    assert ctx.gpu.integrated and ctx.gpu.total_memory == 64 << 30 and cudart.devices == [0]
    # and the documented Jetson install brings cuda-python (it used to be `pip install autoglm-trt` alone)
    from pathlib import Path

    guide = (Path(__file__).resolve().parents[2] / "docs" / "gpu.md").read_text()
    assert "pip install 'autoglm-trt[cuda12]'  # JetPack 6" in guide and "pip install autoglm-trt   " not in guide


def test_gpu_extras_pin_tensorrt_and_cuda_python_per_cuda_major():
    """Review failure 3: `tensorrt>=10.3` / `cuda-python>=12` pulled TensorRT 11 CUDA-13 wheels onto CUDA 12 hosts."""
    import tomllib
    from pathlib import Path

    from packaging.requirements import Requirement
    from packaging.version import Version

    extras = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    # versions on PyPI (pip index versions, 2026-11-29): lowest and highest of each range must exist
    on_pypi = {"tensorrt-cu12": ["10.3.0", "11.4.0.106"], "tensorrt-cu13": ["10.13.2.6", "11.4.0.106"],
               "cuda-python": ["12.6.0", "12.9.10", "13.0.0", "13.4.4"]}
    assert "gpu" not in extras  # the unpinned extra is gone
    for extra, major in (("gpu-cu12", 12), ("gpu-cu13", 13), ("cuda12", 12), ("cuda13", 13)):
        requirements = {r.name: r for r in map(Requirement, extras[extra])}
        assert set(requirements) == ({"cuda-python"} if extra.startswith("cuda") else {f"tensorrt-cu{major}", "cuda-python"})
        for name, requirement in requirements.items():
            allowed = [v for v in on_pypi[name] if requirement.specifier.contains(Version(v))]
            assert allowed, f"{extra}: {requirement} matches nothing on PyPI"
            assert not requirement.specifier.contains(Version("99")), f"{extra}: {requirement} has no upper bound"
            if name == "cuda-python":
                assert {Version(v).major for v in allowed} == {major}


def test_torch_cpu_build_is_not_a_gpu():
    # this venv has the CPU-only torch wheel: the torch probe must not report a GPU
    assert tensorrt_import._probe_torch(0) is None


@pytest.mark.parametrize("args", [
    ["build", "/nonexistent/out", "--fp16"],
    ["build", "/nonexistent/out", "--int8", "--workspace", "4GiB", "--legacy-precision-flags"],
    ["inspect", "/nonexistent/decoder.fp16.engine"],
])
def test_cli_tensorrt_commands_exit_at_once(no_tensorrt, args):
    start = time.perf_counter()
    result = runner.invoke(app, args)
    elapsed = time.perf_counter() - start
    assert result.exit_code == 6, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: TensorRT is not installed")
    assert_one_line_with_remedy(lines[0])
    assert elapsed < 5


def test_cli_reports_missing_gpu_when_tensorrt_exists(monkeypatch, no_gpu, fake_trt, export_dir):
    monkeypatch.setitem(sys.modules, "tensorrt", fake_trt)
    result = runner.invoke(app, ["build", str(export_dir), "--fp16"])
    assert result.exit_code == 6
    assert result.stderr.strip().startswith("error: no CUDA GPU found")
    assert len(result.stderr.strip().splitlines()) == 1


def test_real_subprocess_exits_non_zero_with_one_line(tmp_path):
    """The installed console entry point, as a user runs it here (no tensorrt wheel, no GPU)."""
    completed = subprocess.run(
        [sys.executable, "-c", "from trt_pipeline.cli import app; app()", "build", str(tmp_path), "--fp16"],
        capture_output=True, text=True, timeout=60,
    )
    assert completed.returncode == 6
    assert len(completed.stderr.strip().splitlines()) == 1
    assert_one_line_with_remedy(completed.stderr)


def test_inspect_manifest_only_works_without_tensorrt(no_tensorrt, tmp_path):
    from trt_pipeline.engine.manifest import EngineManifest, write_manifest

    engine = tmp_path / "engines" / "decoder.fp16.engine"
    engine.parent.mkdir()
    engine.write_bytes(b"plan")
    write_manifest(
        EngineManifest(
            component="decoder", precision="fp16", engine_file=engine.name, engine_sha256="a" * 64, engine_size=4,
            onnx_file="onnx/fp16/decoder.onnx", onnx_sha256="b" * 64, tensorrt_version="11.4.1.0",
            gpu_name="NVIDIA GeForce RTX 4090", compute_capability="8.9", cuda_version="12.8", profiles=(),
        ),
        engine,
    )
    result = runner.invoke(app, ["inspect", str(engine), "--manifest-only"])
    assert result.exit_code == 0, result.output
    assert "11.4.1.0" in result.stdout and "NVIDIA GeForce RTX 4090" in result.stdout
    result = runner.invoke(app, ["inspect", str(engine), "--manifest-only", "--json"])
    assert '"tensorrt_version": "11.4.1.0"' in result.stdout


def test_trt_generation_runners_fail_at_once(no_tensorrt, tmp_path):
    from trt_pipeline.runtime.tensorrt_runner import TensorRTRunner, trt_component_runners

    with pytest.raises(TensorRTUnavailableError, match="TensorRT is not installed"):
        trt_component_runners(tmp_path, "fp16")
    with pytest.raises(TensorRTUnavailableError), TensorRTRunner(tmp_path / "decoder.fp16.engine"):
        pass


def test_version_parsing_and_families(fakes):
    assert TensorRTVersion.parse("10.3.0.30") == TensorRTVersion(10, 3, 0, 30)
    assert TensorRTVersion.parse("11.4.1") == TensorRTVersion(11, 4, 1, None)
    assert str(TensorRTVersion.parse("10.13")) == "10.13.0"
    assert TensorRTVersion.parse("10.8.0.43") < TensorRTVersion.parse("10.13.0.35")
    with pytest.raises(ValueError):
        TensorRTVersion.parse("ten")
    assert family_for(TensorRTVersion.parse("10.3.0")).name == "10.x"
    assert family_for(TensorRTVersion.parse("11.4.1")).name == "11.x"
    future = family_for(TensorRTVersion.parse("12.0.0"))  # newer majors behave like the newest known
    assert future.name == "12.x" and not future.legacy_precision_flags
    with pytest.raises(TensorRTUnavailableError, match="too old"):
        family_for(TensorRTVersion.parse("8.6.1.6"))
    shim = detect_shim(fakes.lean)  # the real 11.4 module
    assert shim.version == TensorRTVersion(11, 4, 0, 106)
    assert not shim.legacy_precision_flags
    assert {"NONE", "AMPERE_PLUS", "SAME_COMPUTE_CAPABILITY"} <= shim.hardware_compat_levels


def test_network_flags_per_family(fake_trt_factory):
    trt10 = fake_trt_factory("10.3.0.30")
    shim10 = detect_shim(trt10)
    assert shim10.network_flags(trt10, strongly_typed=True) == 1 << int(trt10.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    assert shim10.network_flags(trt10, strongly_typed=False) == 0
    trt11 = fake_trt_factory("11.4.0.106")
    shim11 = detect_shim(trt11)
    assert shim11.network_flags(trt11, strongly_typed=True) == 0  # always strongly typed; flag deprecated
    with pytest.raises(ValueError, match="only builds strongly typed"):
        shim11.network_flags(trt11, strongly_typed=False)
