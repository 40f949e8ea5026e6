"""`autoglm-trt doctor`: pass/fail lines with what to do; exit 6 without a GPU."""

from __future__ import annotations

import json
import sys

from typer.testing import CliRunner

from trt_pipeline.cli import app
from trt_pipeline.engine import doctor


def test_doctor_on_this_machine_says_there_is_no_gpu_and_exits_6():
    result = CliRunner().invoke(app, ["doctor"])
    assert result.exit_code == 6, result.output
    lines = result.output.splitlines()
    assert any(line.startswith("FAIL  GPU: no CUDA GPU found") and "->" in line for line in lines)
    assert any(line.startswith("FAIL  build: needs TensorRT and a CUDA GPU") for line in lines)
    assert any(line.startswith("FAIL  TensorRT:") and "gpu-cu12" in line for line in lines)
    assert lines[-1] == "No NVIDIA GPU on this machine: TensorRT engines cannot be built or run here (exit 6)."
    report = json.loads(CliRunner().invoke(app, ["doctor", "--json"]).output)
    assert report["exit_code"] == 6 and {c["name"]: c["ok"] for c in report["checks"]}["run"] is False


def _install_orin(monkeypatch, fake_trt, cudart, tmp_path):
    cudart.cudaDriverGetVersion = lambda: (0, 12060)
    monkeypatch.setitem(sys.modules, "tensorrt", fake_trt)
    proc = tmp_path / "version"
    proc.write_text("NVRM version: NVIDIA UNIX Open Kernel Module for aarch64  540.4.0\n")
    monkeypatch.setattr(doctor, "DRIVER_PROC_FILE", proc)


def test_doctor_on_a_jetson_with_cuda_python_and_cpu_torch(monkeypatch, fake_trt, orin_cuda_python, tmp_path):
    """JetPack TensorRT + cuda-python: build and run pass, CUDA graphs fail (they need CUDA PyTorch)."""
    _install_orin(monkeypatch, fake_trt, orin_cuda_python, tmp_path)
    report = doctor.diagnose()
    status = {c.name: c.ok for c in report.checks}
    assert status == {"TensorRT": True, "CUDA (cuda-python)": True, "NVIDIA driver": True, "GPU": True,
                      "build": True, "run": True, "CUDA graphs": False}
    assert report.get("GPU").found == "Orin, compute capability 8.7, CUDA 12.6, integrated (Jetson)"
    assert "540.4.0" in report.get("NVIDIA driver").found and "CUDA 12.6" in report.get("NVIDIA driver").found
    assert report.get("TensorRT").found.startswith("11.4.0.106 (11.x")
    assert "CUDA build of PyTorch" in report.get("CUDA graphs").line()
    assert report.exit_code == 0 and report.verdict().startswith("Ready")
