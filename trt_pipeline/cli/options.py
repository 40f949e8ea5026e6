"""Command-line options shared between commands, declared once as ``Annotated`` types.

A command takes ``calib: Calib = None`` instead of re-declaring ``--calib`` and its help; the flag
names are the user's vocabulary (trtexec / Ultralytics / Optimum) and must stay stable: tests and
scripts call them. Small parsers for comma-separated values live here too.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from trt_pipeline.errors import ConfigError

# --- folders --------------------------------------------------------------------------------------
ExportDir = Annotated[Path, typer.Argument(metavar="DIR", help="Export folder (export.json, onnx/PRECISION/, engines/).")]
CheckpointDir = Annotated[Path, typer.Argument(help="Hugging Face checkpoint folder (config.json + safetensors) or Hub id (org/name, via the HF cache).")]
ReferenceCheckpoint = Annotated[Optional[Path], typer.Option(
    "--checkpoint", help="Reference checkpoint [default: the one named in export.json].")]
Overwrite = Annotated[bool, typer.Option(
    "--overwrite", help="Replace an earlier output of autoglm-trt (a folder it did not write is never replaced).")]
Verify = Annotated[bool, typer.Option(
    "--verify/--no-verify", help="Check ONNX files and embedding tables against their manifests' sha256 and size first.")]
PipelineToml = Annotated[Optional[Path], typer.Option("--config", "-c", help="pipeline.toml (see examples/pipeline.toml).")]

# --- what to work on --------------------------------------------------------------------------------
Components = Annotated[str, typer.Option(help="Comma-separated: vision_encoder,decoder.")]
OnnxPrecision = Annotated[str, typer.Option(help="Which OUT/onnx/PRECISION folder: fp32, fp16, int8 or int4 (the folder `precision` wrote).")]
MaxNewTokens = Annotated[int, typer.Option("--max-new-tokens", help="Greedy tokens per prompt.")]

# --- calibration and held-out data (precision fp16 / int8) -------------------------------------------
Calib = Annotated[Optional[Path], typer.Option(
    "--calib", help="Calibration root with calib/ and heldout/ (default: calibration/ of the repository).")]
CalibSamples = Annotated[int, typer.Option("--calib-samples", help="Calibration items (each gives a vision feed, a prefill and a decode feed).")]
HeldoutSamples = Annotated[int, typer.Option("--heldout-samples", help="Held-out items for the accuracy check.")]
ExcludeNodes = Annotated[Optional[list[str]], typer.Option(
    "--exclude-nodes", help="Node-name regex kept in the higher precision (not converted / not quantized); repeatable.")]
Evaluate = Annotated[bool, typer.Option("--evaluate/--no-evaluate", help="Check the variant against the fp32 ONNX on the held-out set.")]

# --- ONNX Runtime sessions (runtime.onnxruntime_runner.OrtSettings) ----------------------------------
Threads = Annotated[Optional[int], typer.Option(
    "--threads", help="ONNX Runtime intra-op threads (default: one per physical core).")]
InterOpThreads = Annotated[Optional[int], typer.Option(
    "--inter-op-threads", help="ONNX Runtime inter-op threads (used with --ort-execution-mode parallel).")]
OrtExecutionMode = Annotated[str, typer.Option(
    "--ort-execution-mode", help="ONNX Runtime execution mode: sequential or parallel.")]
IoBinding = Annotated[bool, typer.Option(
    "--io-binding/--no-io-binding", help="ONNX Runtime outputs written into reused buffers (IO binding).")]
OrtSpinning = Annotated[bool, typer.Option(
    "--ort-spinning/--no-ort-spinning", help="ONNX Runtime worker threads busy-wait between runs (off: they sleep).")]

# --- output ----------------------------------------------------------------------------------------
AsJson = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")]
Progress = Annotated[bool, typer.Option("--progress/--no-progress", help="Progress bars on stderr.")]


# --- build (the flags of BuildOptions, trtexec vocabulary) -----------------------------------------
class HardwareCompatChoice(str, enum.Enum):
    """``--hardware-compat`` values (TensorRT HardwareCompatibilityLevel NONE / AMPERE_PLUS / SAME_COMPUTE_CAPABILITY)."""

    none = "none"
    ampere_plus = "ampere+"
    same_cc = "same-cc"


Workspace = Annotated[Optional[str], typer.Option(
    "--workspace", help="Workspace memory-pool limit: 4GiB, 512MiB, 2G or GiB as a number. Default: TensorRT's (all device memory).")]
OptLevel = Annotated[int, typer.Option("--opt-level", help="Builder optimization level, 0-5 (TensorRT default 3).")]
TimingCache = Annotated[Optional[Path], typer.Option(
    "--timing-cache", metavar="FILE", help="Timing cache loaded, reused and saved across builds. Default: DIR/engines/timing.cache.")]
MinShapes = Annotated[Optional[str], typer.Option(
    "--min-shapes", metavar="NAME:DIMS,...", help="Override profile minimum shapes, e.g. inputs_embeds:1x1x4096.")]
OptShapes = Annotated[Optional[str], typer.Option("--opt-shapes", metavar="NAME:DIMS,...", help="Override profile optimum shapes.")]
MaxShapes = Annotated[Optional[str], typer.Option("--max-shapes", metavar="NAME:DIMS,...", help="Override profile maximum shapes.")]
HardwareCompat = Annotated[HardwareCompatChoice, typer.Option("--hardware-compat", help="Hardware compatibility level of the engine.")]
VersionCompatible = Annotated[bool, typer.Option("--version-compatible", help="Build a version-compatible engine (runs on newer TensorRT).")]
LegacyPrecisionFlags = Annotated[bool, typer.Option(
    "--legacy-precision-flags",
    help="TensorRT 10.x only: FP16/INT8 builder flags + calibration cache on the fp32 ONNX instead of strong typing.")]


# --- parsers ---------------------------------------------------------------------------------------
def split_list(value: str) -> tuple[str, ...]:
    """``"a, b,,c"`` -> ``("a", "b", "c")``."""
    return tuple(part.strip() for part in value.split(",") if part.strip())


def int_list(value: Optional[str]) -> Optional[tuple[int, ...]]:
    """``"16,64"`` -> ``(16, 64)``; None stays None (option not given)."""
    if value is None:
        return None
    try:
        return tuple(int(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"expected comma-separated integers, got {value!r}.") from None


def tolerance_pairs(values: Optional[list[str]]) -> list[tuple[str, str]]:
    """``--tol KEY=VALUE`` (repeatable) -> ``[(KEY, VALUE), ...]``."""
    pairs = []
    for value in values or []:
        key, sep, number = value.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--tol {value!r}: expected KEY=VALUE, e.g. fp16.logits.cosine=0.999 or int8.tokens=0.25.")
        pairs.append((key.strip(), number.strip()))
    return pairs
