"""``pipeline.toml`` -> :class:`PipelineConfig`: one typed field per stage section.

::

    [pipeline]   checkpoint, out, preset, seed, skip, rehash     (PipelineSection)
    [export]     ExportConfig
    [fp16]       Fp16Config
    [int8]       Int8Config;   [int8.components] table
    [build]      BuildStageConfig (precisions + the `autoglm-trt build` options)
    [compare]    CompareConfig;  [compare.tolerances] table
    [bench]      BenchConfig

Each table is validated strictly by pydantic (:func:`~trt_pipeline.config.base.validate_table`): an
unknown section or key, or a value of the wrong type, is a :class:`~trt_pipeline.errors.ConfigError`
naming the key, the section and the file (and the valid keys). Relative paths (``checkpoint``,
``out``, calibration folders) are relative to the current directory, like the same CLI options.
See ``examples/pipeline.toml``.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping
from dataclasses import field
from pathlib import Path
from typing import Any

from pydantic.dataclasses import dataclass

from trt_pipeline.config.base import STAGE_CONFIG, validate_table
from trt_pipeline.config.build import BuildStageConfig
from trt_pipeline.config.stages import BenchConfig, CompareConfig, ExportConfig, Fp16Config, Int8Config
from trt_pipeline.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

#: Pipeline stages in execution order (``--force STAGE`` re-runs STAGE and everything after it).
PIPELINE_STAGES = ("checkpoint", "export", "fp16", "int8", "build", "compare", "bench", "report")

#: Pipeline defaults that differ from the stand-alone commands' defaults (a pipeline.toml table
#: overrides them key by key). They keep the built-in tiny demo within its 2-minute budget on 2 cores:
#: the comparison uses 6 held-out prompts x 8 greedy tokens and no extra profile-extreme inputs
#: (``autoglm-trt compare`` alone: all 28 x 16, with extremes; fp32 at every axis' min/max is still
#: checked against transformers by the export stage's validation grid),
#: the benchmark fewer timed repetitions (``autoglm-trt bench`` alone: 10 prefill, 32 decode).
PIPELINE_DEFAULTS: dict[str, dict[str, Any]] = {
    "compare": {"max_items": 6, "max_new_tokens": 8, "extremes": False},
    "bench": {"iterations": 5, "decode_steps": 16, "bandwidth_mib": 128, "bandwidth_repeats": 3},
}

#: pipeline.toml section -> the stage config class it maps onto.
STAGE_SECTIONS: dict[str, type] = {
    "export": ExportConfig,
    "fp16": Fp16Config,
    "int8": Int8Config,
    "build": BuildStageConfig,
    "compare": CompareConfig,
    "bench": BenchConfig,
}


@dataclass(frozen=True, config=STAGE_CONFIG)
class PipelineSection:
    """The ``[pipeline]`` table: the run itself."""

    checkpoint: Path | None = None
    out: Path | None = None
    preset: str = "tiny"
    seed: int = 0
    skip: tuple[str, ...] = ()
    rehash: bool = False


@dataclass(frozen=True, config=STAGE_CONFIG)
class PipelineConfig(PipelineSection):
    """``autoglm-trt pipeline``: the ``[pipeline]`` run fields, what to force, and every stage's config.

    ``checkpoint`` None means: make the built-in ``preset`` checkpoint (tiny) in OUT/hf (the export's HF folder, so OUT holds it once).
    ``out`` None means ``engines/<checkpoint folder name>`` (``engines/<preset>`` for the built-in one).
    ``force`` comes from the command line only. Stage configs default to :data:`PIPELINE_DEFAULTS`
    over each class's defaults.
    """

    force: str | None = None
    export: ExportConfig = field(default_factory=ExportConfig)
    fp16: Fp16Config = field(default_factory=Fp16Config)
    int8: Int8Config = field(default_factory=Int8Config)
    build: BuildStageConfig = field(default_factory=BuildStageConfig)
    compare: CompareConfig = field(default_factory=lambda: CompareConfig(**PIPELINE_DEFAULTS["compare"]))
    bench: BenchConfig = field(default_factory=lambda: BenchConfig(**PIPELINE_DEFAULTS["bench"]))
    source: Path | None = None  # the pipeline.toml it was read from

    def __post_init__(self) -> None:
        for stage in (*self.skip, *([self.force] if self.force else [])):
            if stage not in PIPELINE_STAGES:
                raise ConfigError(f"unknown pipeline stage {stage!r}; stages: {', '.join(PIPELINE_STAGES)}.")

    def resolved_out(self) -> Path:
        if self.out is not None:
            return self.out
        name = self.checkpoint.resolve().name if self.checkpoint is not None else self.preset
        return Path("engines") / name

    def section(self, name: str) -> Any:
        """The config of stage section ``name`` (``export``, ``fp16``, ... ``bench``)."""
        if name not in STAGE_SECTIONS:
            raise ConfigError(f"unknown pipeline section {name!r}; sections: {', '.join(STAGE_SECTIONS)}.")
        return getattr(self, name)


def read_toml(path: Path | str) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"pipeline config {path} not found.", path=path,
                          hint="pass an existing file, e.g. --config examples/pipeline.toml.")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path} is not valid TOML: {error}", path=path) from None
    except (UnicodeDecodeError, OSError) as error:
        raise ConfigError(f"cannot read pipeline config {path}: {error}", path=path) from None


def _check_sections(data: Mapping[str, Any], source: Path | str) -> None:
    names = ("pipeline", *STAGE_SECTIONS)
    unknown = [name for name in data if name not in names]
    if unknown:
        raise ConfigError(f"unknown section [{unknown[0]}] in {source}.", path=source,
                          hint=f"sections: {', '.join(f'[{s}]' for s in names)}.")
    for name, table in data.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{name} in {source} must be a table ([{name}]), got a {type(table).__name__}.",
                              path=source)


def parse_pipeline_config(data: Mapping[str, Any], source: Path | str = "<pipeline.toml>") -> PipelineConfig:
    """Map parsed TOML onto a :class:`PipelineConfig` (see the module docstring for sections)."""
    _check_sections(data, source)
    stages = {name: validate_table(cls, data.get(name, {}), section=name, source=source,
                                   defaults=PIPELINE_DEFAULTS.get(name))
              for name, cls in STAGE_SECTIONS.items()}
    run = validate_table(PipelineSection, data.get("pipeline", {}), section="pipeline", source=source)
    try:
        return PipelineConfig(**{f.name: getattr(run, f.name) for f in dataclasses.fields(run)}, **stages,
                              source=Path(source) if not str(source).startswith("<") else None)
    except ConfigError as error:
        raise ConfigError(f"[pipeline] in {source}: {error.message}", path=source, hint=error.hint) from None


def load_pipeline_config(path: Path | str | None = None, **overrides: Any) -> PipelineConfig:
    """Read ``path`` (or start from defaults) and apply non-None ``overrides`` (CLI options).

    ``overrides`` are PipelineConfig fields: ``checkpoint``, ``out``, ``force``, ``rehash``, ``skip``...
    """
    cfg = parse_pipeline_config(read_toml(path), path) if path is not None else parse_pipeline_config({}, "<defaults>")
    changes = {k: v for k, v in overrides.items() if v is not None}
    unknown = [k for k in changes if k not in {f.name for f in dataclasses.fields(PipelineConfig)}]
    if unknown:
        raise ConfigError(f"unknown pipeline option(s) {unknown}.")
    return dataclasses.replace(cfg, **changes) if changes else cfg


def config_json(obj: Any) -> Any:
    """JSON form of a stage config (``to_dict`` when it has one) for hashing and reports."""
    if obj is None:
        return None
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    return obj
