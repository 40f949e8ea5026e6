"""Typed pipeline errors and the single place that maps them to exit codes.

Every user-facing failure is a :class:`PipelineError` that names the file involved, what was
expected and what to do next. The CLI catches ``PipelineError`` once and turns it into a
one-paragraph message plus the exit code from :data:`EXIT_CODES`; nothing else prints tracebacks
at users.
"""

from __future__ import annotations

from pathlib import Path


class PipelineError(Exception):
    """Base class: a failure the user can act on.

    Args:
        message: what went wrong.
        path: the file or folder involved, if any.
        hint: what to do about it.
    """

    exit_code: int = 1

    def __init__(self, message: str, *, path: Path | str | None = None, hint: str | None = None):
        self.message = message
        self.path = Path(path) if path is not None else None
        self.hint = hint
        super().__init__(self.render())

    def render(self) -> str:
        parts = [self.message]
        if self.path is not None and str(self.path) not in self.message:
            parts.append(f"(file: {self.path})")
        text = " ".join(parts)
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


class CheckpointError(PipelineError):
    """A Hugging Face checkpoint folder is missing, incomplete, corrupt or of another architecture."""

    exit_code = 2


class ConfigError(PipelineError):
    """A configuration value (CLI option, TOML file, shape range) is invalid."""

    exit_code = 2


class OnnxModelError(PipelineError):
    """An ONNX file is missing, corrupt or does not match its manifest."""

    exit_code = 3


class ShapeError(PipelineError):
    """An input shape lies outside the exported ranges / optimization profile."""

    exit_code = 3


class CalibrationError(PipelineError):
    """Calibration data is missing, empty, undecodable or outside the exported ranges."""

    exit_code = 4


class AccuracyError(PipelineError):
    """A comparison against the PyTorch reference exceeded its tolerance (Optimum: AtolError)."""

    exit_code = 5


class AtolError(AccuracyError):
    """Max absolute error above the tolerance for one output."""


class TensorRTUnavailableError(PipelineError):
    """TensorRT or a CUDA GPU is not present on this machine."""

    exit_code = 6


class EngineCompatibilityError(PipelineError):
    """An engine was built for another TensorRT version or GPU."""

    exit_code = 7


class DiskSpaceError(PipelineError):
    """Not enough free disk for the artifacts about to be written."""

    exit_code = 8


EXIT_CODES: dict[type[PipelineError], int] = {
    cls: cls.exit_code
    for cls in (
        PipelineError,
        CheckpointError,
        ConfigError,
        OnnxModelError,
        ShapeError,
        CalibrationError,
        AccuracyError,
        AtolError,
        TensorRTUnavailableError,
        EngineCompatibilityError,
        DiskSpaceError,
    )
}


def exit_code_for(error: BaseException) -> int:
    """Exit code for an exception: the typed code for PipelineErrors, 1 otherwise."""
    if isinstance(error, PipelineError):
        return error.exit_code
    return 1
