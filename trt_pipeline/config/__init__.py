"""Typed configuration: one frozen pydantic dataclass per stage, ``pipeline.toml``, build options.

- :mod:`.stages`: export, simplify, fp16, int8, compare, bench configs (and ``DimRange``).
- :mod:`.build`: the one set of TensorRT build options (CLI, ``[build]`` and the builder share it).
- :mod:`.pipeline`: ``PipelineConfig`` and the ``pipeline.toml`` reader.
- the gate table is :mod:`trt_pipeline.accuracy.gates` (one table for validate, precision, compare).
- :mod:`.base`: strict TOML-table validation with errors naming the key and the file.
"""

from __future__ import annotations

from trt_pipeline.config.build import BuildOptions, BuildStageConfig
from trt_pipeline.config.int4 import Int4Config
from trt_pipeline.config.pipeline import (
    PIPELINE_DEFAULTS,
    PIPELINE_STAGES,
    PipelineConfig,
    load_pipeline_config,
    parse_pipeline_config,
)
from trt_pipeline.config.stages import (
    BENCH_BACKENDS,
    COMPARE_PRECISIONS,
    COMPONENT_PRECISIONS,
    COMPONENTS,
    INT8_METHODS,
    BenchConfig,
    CompareConfig,
    DimRange,
    ExportConfig,
    Fp16Config,
    Int8Config,
    SimplifyConfig,
)

__all__ = [
    "BENCH_BACKENDS",
    "COMPARE_PRECISIONS",
    "COMPONENTS",
    "COMPONENT_PRECISIONS",
    "INT8_METHODS",
    "PIPELINE_DEFAULTS",
    "PIPELINE_STAGES",
    "BenchConfig",
    "BuildOptions",
    "BuildStageConfig",
    "CompareConfig",
    "DimRange",
    "ExportConfig",
    "Fp16Config",
    "Int4Config",
    "Int8Config",
    "PipelineConfig",
    "SimplifyConfig",
    "load_pipeline_config",
    "parse_pipeline_config",
]
