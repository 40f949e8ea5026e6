"""``autoglm-trt serve``: an OpenAI-compatible server over the artifacts the pipeline writes.

Library first: ``create_app(ServeConfig(out=...))`` is the FastAPI app, ``serve(config)`` runs it
under uvicorn. Modules: ``protocol`` (OpenAI shapes), ``app`` (routes), ``chat`` (messages -> inputs),
``media`` (images), ``engine`` (runners, prefill, batched decode), ``scheduler`` (continuous
batching), ``sampling``, ``reasoning``, ``prefix_cache``, ``metrics``, ``output`` (detokenization).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from trt_pipeline.serve.model import ServeConfig


def serve(config: ServeConfig) -> None:
    """Run the server in the foreground until interrupted (uvicorn)."""
    import logging

    from trt_pipeline.errors import ConfigError

    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError as error:
        raise ConfigError(f"`autoglm-trt serve` needs {error.name}.",
                          hint="pip install 'autoglm-trt[serve]' (FastAPI + uvicorn).") from None

    from trt_pipeline.serve.app import create_app
    from trt_pipeline.serve.model import preflight

    preflight(config)
    if config.backend != "torch":
        from trt_pipeline.runtime.host_threads import single_thread_host_torch

        single_thread_host_torch()  # the host feeds ONNX Runtime / TensorRT: its torch ops are tiny
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(message)s")
    uvicorn.run(create_app(config), host=config.host, port=config.port, log_level="info")


__all__ = ["serve"]
