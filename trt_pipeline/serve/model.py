"""What the server loads once: engine, tokenizer/processor, scheduler, and the config behind them."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trt_pipeline.serve.chat import MediaPolicy
from trt_pipeline.models.glm4v.contract import ExportContract
from trt_pipeline.serve.engine import ServeEngine
from trt_pipeline.serve.metrics import ServeMetrics
from trt_pipeline.serve.prefix_cache import PrefixCache
from trt_pipeline.serve.scheduler import Scheduler

log = logging.getLogger("trt_pipeline.serve")


@dataclass(frozen=True)
class ServeConfig:
    """Options of ``autoglm-trt serve`` (one field per flag)."""

    out: Path
    backend: str = "ort"
    precision: str = "fp32"
    host: str = "127.0.0.1"
    port: int = 8000
    served_model_name: str = "autoglm-phone-9b"
    api_key: str | None = None
    max_queue: int = 64
    prefix_cache_entries: int = 8  # 0 disables KV reuse across requests
    prefill_chunk: int | None = None  # prompt tokens per decoder call between decode steps (None: default)
    ort: Any = None  # ONNX Runtime session settings (runtime.onnxruntime_runner.OrtSettings); None: defaults
    media: MediaPolicy = field(default_factory=MediaPolicy)


@dataclass
class ServedModel:
    engine: ServeEngine
    processing: Any  # Glm4vProcessing
    scheduler: Scheduler
    eos_token_ids: list[int]

    @property
    def contract(self) -> ExportContract:
        return self.engine.contract

    def close(self) -> None:
        self.scheduler.stop()
        self.engine.close()


def describe(config: ServeConfig, engine: ServeEngine) -> str:
    contract = engine.contract
    return (f"serving {config.served_model_name} from {config.out}: backend {config.backend}, precision "
            f"{config.precision}, {engine.kv_layout.kind} KV cache; profiles ({contract.source.name}): "
            f"batch <= {contract.max_batch}, decoder call "
            f"<= {contract.max_chunk} tokens (prefill chunks of {engine.prefill_chunk}), prompt + reply <= "
            f"{contract.max_sequence} tokens, image tokens {contract.min_image_tokens}..{contract.max_image_tokens}; "
            f"queue <= {config.max_queue}, prefix cache {config.prefix_cache_entries} entries"
            + (f"; ONNX Runtime {config.ort.to_dict()}" if config.ort is not None and config.backend == "ort" else ""))


def preflight(config: ServeConfig) -> None:
    """Fail before binding the port: unknown backend, not an export folder, TensorRT/GPU missing.

    Raises:
        ConfigError, OnnxModelError, PipelineError, TensorRTUnavailableError: the typed error to show.
    """
    from trt_pipeline.errors import ConfigError
    from trt_pipeline.generate import export_contract, require_export, resolve_source
    from trt_pipeline.serve.engine import RUNNER_FACTORIES

    if config.backend not in RUNNER_FACTORIES:
        raise ConfigError(f"unknown backend {config.backend!r}; choose from {sorted(RUNNER_FACTORIES)}.")
    export_contract(require_export(resolve_source(config.out), config.backend))
    if config.backend == "trt":
        from trt_pipeline.engine.tensorrt_import import require_tensorrt

        require_tensorrt()  # TensorRTUnavailableError with an install hint on machines without TensorRT/GPU


def load_model(config: ServeConfig, metrics: ServeMetrics) -> ServedModel:
    """Load runners and processing of ``config.out`` and start the scheduler thread."""
    from trt_pipeline.generate import require_export, resolve_source
    from trt_pipeline.models.glm4v.processing import Glm4vProcessing

    source = resolve_source(config.out)
    out_dir = require_export(source, config.backend)
    engine = ServeEngine.load(out_dir, config.backend, config.precision, config.prefill_chunk, config.ort)
    processing = Glm4vProcessing(source.hf_dir, max_pixels=source.max_pixels)
    eos = processing.eos_token_ids
    cache = PrefixCache(config.prefix_cache_entries) if config.prefix_cache_entries > 0 else None
    scheduler = Scheduler(engine, eos, metrics, cache, config.max_queue)
    scheduler.start()
    log.info(describe(config, engine))
    return ServedModel(engine, processing, scheduler, eos)
