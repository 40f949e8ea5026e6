"""Run Polygraphy's TensorRT loaders on the TensorRT module of a :class:`TensorRTContext`.

The builder uses Polygraphy's loaders (``polygraphy.backend.trt``: the ONNX network loader,
``CreateConfig``, ``EngineBytesFromNetwork``) instead of hand-written TensorRT calls. Polygraphy imports
``tensorrt`` lazily (one ``LazyModule`` named ``trt`` per Polygraphy module) and keeps its own
process-wide TensorRT logger (``polygraphy.backend.trt.util.TRT_LOGGER``). :func:`polygraphy_on` makes
both agree with the context the pipeline was handed:

* the lazy ``trt`` modules resolve to ``ctx.trt``. On a GPU machine that is the very ``tensorrt``
  Polygraphy would import itself, so nothing changes; a caller that injects a context (the tests, on a
  fake built from ``tensorrt_lean``'s real classes) gets Polygraphy and the pipeline on the same module;
* Polygraphy's logger is this process's one TensorRT logger
  (:func:`~trt_pipeline.engine.trt_logger.process_logger`): TensorRT keeps the first logger it is
  given, and the per-build error capture must see what a Polygraphy-created ``Builder`` reports;
* Polygraphy's own log (stdout) is limited to errors: the build prints its own summary, and Polygraphy's
  failures surface as exceptions that the builder turns into typed errors.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

from trt_pipeline.engine.profiles import Profile
from trt_pipeline.engine.trt_logger import process_logger


def _lazy_trt_holders() -> list[Any]:
    """Every loaded Polygraphy module holding a lazily imported ``trt``."""
    import polygraphy.backend.trt  # noqa: F401 - loads loader/config/util/profile/runner/calibrator
    import polygraphy.datatype.tensorrt  # noqa: F401

    holders = []
    for name, module in list(sys.modules.items()):
        lazy = getattr(module, "trt", None) if name.startswith("polygraphy") else None
        if lazy is not None and type(lazy).__name__ == "LazyModule":
            holders.append(lazy)
    return holders


@contextlib.contextmanager
def polygraphy_on(trt: Any) -> Iterator[None]:
    """Inside the block Polygraphy's TensorRT loaders use ``trt`` and this process's TensorRT logger."""
    from polygraphy.backend.trt import util as trt_util
    from polygraphy.logger import G_LOGGER

    holders = _lazy_trt_holders()
    previous = [lazy.__dict__.get("module") for lazy in holders]
    previous_logger = trt_util.TRT_LOGGER
    for lazy in holders:
        object.__setattr__(lazy, "module", trt)
    trt_util.TRT_LOGGER = process_logger(trt)
    try:
        with G_LOGGER.verbosity(G_LOGGER.ERROR):
            yield
    finally:
        for lazy, module in zip(holders, previous):
            object.__setattr__(lazy, "module", module)
        trt_util.TRT_LOGGER = previous_logger


def polygraphy_profile(profile: Profile) -> Any:
    """Our profile recipe (:mod:`trt_pipeline.engine.profiles`) as a ``polygraphy.backend.trt.Profile``."""
    from polygraphy.backend.trt import Profile as PolygraphyProfile

    converted = PolygraphyProfile()
    for name, shapes in profile.shapes.items():
        converted.add(name, tuple(shapes.min), tuple(shapes.opt), tuple(shapes.max))
    return converted
