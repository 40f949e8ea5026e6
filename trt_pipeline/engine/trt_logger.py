"""One TensorRT logger per process, with per-operation captures of what it reports.

TensorRT keeps a single process-wide logger: the first ``ILogger`` handed to ``Builder`` /
``Runtime`` is the one it uses, later ones are ignored (with a warning) -- Polygraphy therefore
creates exactly one (``polygraphy/backend/trt/util.py: get_trt_logger``). Creating a fresh logger per
build or load, as this package used to, means the errors of the second build land in the first
build's logger and the failure message of the second says "no details".

:func:`process_logger` returns that single logger; :func:`capture_log` collects what it reports
while one build / deserialization / inference runs (the errors end up in that operation's failure
message) and optionally echoes errors and warnings as they arrive.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

#: Errors/warnings the logger itself keeps (for messages after the operation's capture ended).
KEEP_LAST = 50

_LOCK = threading.Lock()
_LOGGERS: dict[int, Any] = {}


@dataclass
class LogCapture:
    """What TensorRT reported while one operation ran."""

    echo: Callable[[str], None] | None = None
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def details(self, last: int = 5, default: str = "TensorRT reported no error message") -> str:
        return "; ".join(self.errors[-last:]) or default


def make_logger(trt: Any, *, echo: Callable[[str], None] | None = None) -> Any:
    """A ``trt.ILogger`` that keeps errors/warnings and forwards them to the active captures (and ``echo``).

    Use :func:`process_logger` in pipeline code; this factory exists for it and for tests.
    """

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []
            self.warnings: list[str] = []
            self.captures: list[LogCapture] = []

        def log(self, severity: Any, msg: str) -> None:
            error = severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR)
            if not error and severity != trt.ILogger.Severity.WARNING:
                return
            kind, label = ("errors", "error") if error else ("warnings", "warning")
            with _LOCK:
                kept = getattr(self, kind)
                kept.append(msg)
                del kept[:-KEEP_LAST]
                captures = list(self.captures)
            for sink in (echo, *(c.echo for c in captures)):
                if sink is not None:
                    sink(f"[TensorRT {label}] {msg}")
            for capture in captures:
                getattr(capture, kind).append(msg)

    return _Logger()


def process_logger(trt: Any) -> Any:
    """The one logger of this process for the TensorRT module ``trt`` (created on first use)."""
    with _LOCK:
        logger = _LOGGERS.get(id(trt))
        if logger is None or getattr(logger, "_trt_module", None) is not trt:
            logger = make_logger(trt)
            logger._trt_module = trt
            _LOGGERS[id(trt)] = logger
        return logger


@contextlib.contextmanager
def capture_log(trt: Any, echo: Callable[[str], None] | None = None) -> Iterator[LogCapture]:
    """Collect what the process logger reports inside the ``with`` block."""
    logger = process_logger(trt)
    capture = LogCapture(echo=echo)
    with _LOCK:
        logger.captures.append(capture)
    try:
        yield capture
    finally:
        with _LOCK:
            logger.captures.remove(capture)
