"""``autoglm-trt doctor``: can this machine build and run TensorRT engines, and if not, what to do.

One :class:`Check` per question, each pass/fail with the value found and, on failure, the fix:

* TensorRT (full wheel or JetPack's; the runtime-only ``tensorrt_lean`` cannot build),
* CUDA runtime through cuda-python, the NVIDIA driver (``cudaDriverGetVersion``, else
  ``/proc/driver/nvidia/version``), the GPU and its compute capability,
* whether ``build`` (TensorRT + GPU), ``run`` (plus device buffers: CUDA torch or cuda-python) and
  CUDA graphs (plus CUDA torch) are possible.

:func:`diagnose` never raises for a missing piece: it is the tool a user runs when something is
missing. The exit code is :data:`~trt_pipeline.errors.TensorRTUnavailableError`'s (6) when build or
run is impossible, 0 otherwise.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trt_pipeline.engine import tensorrt_import as ti
from trt_pipeline.errors import TensorRTUnavailableError

DRIVER_PROC_FILE = Path("/proc/driver/nvidia/version")
#: Lowest driver per CUDA major of the wheels (docs/gpu.md, pyproject's gpu-cu12 / gpu-cu13 extras).
DRIVER_FOR_CUDA = {12: "525.60.13", 13: "580"}


@dataclass(frozen=True)
class Check:
    """One line of the report: ``PASS``/``FAIL``, what was checked, what was found, what to do."""

    name: str
    ok: bool
    found: str
    fix: str = ""

    def line(self) -> str:
        text = f"{'PASS' if self.ok else 'FAIL'}  {self.name}: {self.found}"
        return text if self.ok or not self.fix else f"{text} -> {self.fix}"


@dataclass
class DoctorReport:
    checks: list[Check] = field(default_factory=list)

    def get(self, name: str) -> Check:
        return next(c for c in self.checks if c.name == name)

    @property
    def exit_code(self) -> int:
        ready = all(self.get(name).ok for name in ("build", "run"))
        return 0 if ready else TensorRTUnavailableError.exit_code

    def lines(self) -> list[str]:
        return [check.line() for check in self.checks]

    def verdict(self) -> str:
        """One closing sentence; says plainly when there is no GPU."""
        if not self.get("GPU").ok:
            return "No NVIDIA GPU on this machine: TensorRT engines cannot be built or run here (exit 6)."
        if self.exit_code:
            return "TensorRT engines cannot be built or run here: fix the FAIL lines (exit 6)."
        return "Ready: engines can be built and run here."

    def to_json(self) -> dict[str, Any]:
        return {"exit_code": self.exit_code, "checks": [c.__dict__ for c in self.checks]}


def check_tensorrt() -> tuple[Check, Any]:
    try:
        trt = ti.import_tensorrt()
        shim = ti.detect_shim(trt)
    except TensorRTUnavailableError as error:
        lean = " (only the runtime-only tensorrt_lean, which cannot build)" if "tensorrt_lean" in error.message else ""
        return Check("TensorRT", False, error.message.split(":")[0] + lean, ti.INSTALL_HINT), None
    return Check("TensorRT", True, f"{shim.version} ({shim.family.name}, {shim.family.jetpack} line)"), trt


def _cudart_version(cudart: Any, call: str) -> str | None:
    try:
        err, value = getattr(cudart, call)()
    except Exception:  # noqa: BLE001 - a broken binding is reported as "unknown"
        return None
    if int(getattr(err, "value", err)) != 0:
        return None
    return f"{int(value) // 1000}.{(int(value) % 1000) // 10}"


def check_cuda() -> tuple[Check, Check]:
    """(CUDA runtime via cuda-python, NVIDIA driver)."""
    cudart = ti.import_cudart()
    if cudart is None:
        runtime = Check("CUDA (cuda-python)", False, "cuda-python is not installed",
                        "pip install 'autoglm-trt[cuda12]' (CUDA 12 driver) or '[cuda13]' (CUDA 13 driver)")
    else:
        runtime = Check("CUDA (cuda-python)", True, f"runtime {_cudart_version(cudart, 'cudaRuntimeGetVersion') or 'unknown'}")
    driver_cuda = _cudart_version(cudart, "cudaDriverGetVersion") if cudart is not None else None
    proc = DRIVER_PROC_FILE.read_text(errors="replace").split("\n")[0].strip() if DRIVER_PROC_FILE.is_file() else ""
    if not proc and not driver_cuda:
        needed = ", ".join(f">= {v} for CUDA {k}" for k, v in DRIVER_FOR_CUDA.items())
        return runtime, Check("NVIDIA driver", False, "no NVIDIA kernel driver loaded",
                              f"install the NVIDIA driver ({needed}); in Docker run with --gpus all")
    found = "; ".join(part for part in (proc, f"supports CUDA {driver_cuda}" if driver_cuda else "") if part)
    return runtime, Check("NVIDIA driver", True, found)


def check_gpu() -> tuple[Check, ti.GpuInfo | None]:
    try:
        gpu = ti.detect_gpu()
    except TensorRTUnavailableError:
        return Check("GPU", False, "no CUDA GPU found (neither CUDA PyTorch nor cuda-python sees one)",
                     "run on a machine with an NVIDIA GPU and driver (Docker: --gpus all); on Jetson install "
                     "'autoglm-trt[cuda12]' (JetPack 6) or '[cuda13]' (JetPack 7)"), None
    kind = ", integrated (Jetson)" if gpu.integrated else ""
    return Check("GPU", True, f"{gpu.name}, compute capability {gpu.compute_capability}, CUDA {gpu.cuda_version}{kind}"), gpu


def _torch_cuda() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    torch = importlib.import_module("torch")
    return bool(torch.cuda.is_available())


def capability_checks(trt: Any, gpu: ti.GpuInfo | None, cuda_python: bool, torch_cuda: bool) -> list[Check]:
    """build / run / CUDA graphs from what was found."""
    missing = [what for what, there in (("TensorRT", trt is not None), ("a CUDA GPU", gpu is not None)) if not there]
    build = Check("build", not missing, "possible" if not missing else f"needs {' and '.join(missing)}",
                  "fix the FAIL lines above")
    buffers = torch_cuda or cuda_python
    run_ok = build.ok and buffers
    run_found = "possible" if run_ok else ("needs " + ", ".join(
        [*missing, *([] if buffers else ["device buffers (CUDA PyTorch or cuda-python)"])]))
    run = Check("run", run_ok, run_found, "fix the FAIL lines above; cuda-python is enough for device buffers")
    graphs_ok = run_ok and torch_cuda
    graphs = Check("CUDA graphs", graphs_ok, "possible (torch.cuda.graph)" if graphs_ok else "needs `run` and a CUDA build of PyTorch",
                   "install a CUDA build of PyTorch (NVIDIA's JetPack wheel on Jetson); without it decode runs without graphs")
    return [build, run, graphs]


def diagnose() -> DoctorReport:
    """Every check, in order; never raises for a missing piece."""
    tensorrt, trt = check_tensorrt()
    runtime, driver = check_cuda()
    gpu_check, gpu = check_gpu()
    report = DoctorReport([tensorrt, runtime, driver, gpu_check])
    report.checks += capability_checks(trt, gpu, runtime.ok, _torch_cuda())
    return report
