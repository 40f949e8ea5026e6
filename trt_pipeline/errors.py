"""Typed pipeline errors and the single place that maps them to exit codes.

Every user-facing failure is a :class:`PipelineError` that names the file involved, what was
expected and what to do next; its class carries the exit code. The CLI's one top-level handler
(``trt_pipeline.cli.app``) turns it into a one-paragraph message and that code; OS failures a user
can act on become typed errors through :func:`from_os_error`; nothing prints tracebacks at users.
"""

from __future__ import annotations

import errno
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
    """Not enough free disk for the artifacts about to be written (or the disk filled up while writing)."""

    exit_code = 8


class FilePermissionError(PipelineError):
    """A file or folder cannot be read or written by this user (wrong --out, read-only mount)."""

    exit_code = 2


#: Exit code of a run stopped by Ctrl-C (128 + SIGINT), after its clean-up ran.
INTERRUPTED_EXIT_CODE = 130


def from_os_error(error: OSError) -> PipelineError | None:
    """The typed error for an OS failure a user can act on (disk full, permission denied); None otherwise."""
    path = error.filename if error.filename is not None else None
    where = f" {path}" if path is not None else ""
    if error.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return DiskSpaceError(
            f"no space left on the device while writing{where}: {error.strerror}.", path=path,
            hint="free some disk space or choose an output folder on a larger disk, then run the command again.",
        )
    if isinstance(error, PermissionError):
        return FilePermissionError(
            f"permission denied:{where or ' (no path given)'}.", path=path,
            hint="choose a folder you can write (e.g. --out under your home) or fix its permissions.",
        )
    return None


class OutputFolderError(PipelineError):
    """An output path cannot be written safely: it is a file, a folder the tool did not make, or locked."""

    exit_code = 2


class ArtifactIntegrityError(OnnxModelError):
    """An artifact (ONNX, external weights, embeddings, engine) no longer matches its manifest's sha256/size."""
