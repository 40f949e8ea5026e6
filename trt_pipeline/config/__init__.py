"""Typed configuration: one frozen pydantic dataclass per stage, ``pipeline.toml``, build options.

- :mod:`.stages`: export, simplify, fp16, int8, compare, bench configs (and ``DimRange``).
- :mod:`.build`: the one set of TensorRT build options (CLI, ``[build]`` and the builder share it).
- :mod:`.pipeline`: ``PipelineConfig`` and the ``pipeline.toml`` reader.
- :mod:`.gates`: the compare gate table.
- :mod:`.base`: strict TOML-table validation with errors naming the key and the file.
"""

from __future__ import annotations

from trt_pipeline.config.build import BuildOptions, BuildStageConfig
from trt_pipeline.config.gates import (
    COMPARE_OUTPUT_GROUPS,
    COMPARE_PRECISIONS,
    DEFAULT_COMPARE_GATES,
    OutputGate,
    PrecisionGates,
)
from trt_pipeline.config.pipeline import (
    PIPELINE_DEFAULTS,
    PIPELINE_STAGES,
    PipelineConfig,
    load_pipeline_config,
    parse_pipeline_config,
)
from trt_pipeline.config.stages import (
    BENCH_BACKENDS,
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
    "COMPARE_OUTPUT_GROUPS",
    "COMPARE_PRECISIONS",
    "COMPONENTS",
    "COMPONENT_PRECISIONS",
    "DEFAULT_COMPARE_GATES",
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
    "Int8Config",
    "OutputGate",
    "PipelineConfig",
    "PrecisionGates",
    "SimplifyConfig",
    "load_pipeline_config",
    "parse_pipeline_config",
]
