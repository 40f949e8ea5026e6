"""``pipeline.toml`` -> :class:`~trt_pipeline.config.PipelineConfig`.

One TOML section per stage, each mapped onto that stage's frozen config dataclass field by field
(a registry of sections, :data:`SECTIONS`); ``[pipeline]`` holds the run itself::

    [pipeline]            checkpoint, out, preset, seed, skip, rehash
    [export]              ExportConfig        (trt_pipeline.config)
    [fp16]                Fp16Config          (trt_pipeline.config)
    [int8]                Int8Config          (trt_pipeline.config); [int8.components] table
    [build]               BuildStageConfig    (below: precisions + `autoglm-trt build` options)
    [compare]             CompareConfig       (trt_pipeline.config); [compare.tolerances] table
    [bench]               BenchConfig         (trt_pipeline.config)

Every key is checked: an unknown section or key is a :class:`~trt_pipeline.errors.ConfigError`
naming the key, the section and the file, with the valid keys; a value of the wrong type names the
expected type. Relative paths (``checkpoint``, ``out``, calibration folders) are taken relative to
the current directory, like the same options on the command line. See ``examples/pipeline.toml``.
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trt_pipeline.config import PIPELINE_STAGES, BenchConfig, ExportConfig, PipelineConfig
from trt_pipeline.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


@dataclass(frozen=True)
class BuildStageConfig:
    """``[build]``: which ONNX precision folders to compile and the ``autoglm-trt build`` options.

    Precisions whose ``OUT/onnx/PRECISION`` folder does not exist are skipped with a line. Shapes use
    trtexec syntax (``"inputs_embeds:1x1x4096,..."``); ``workspace`` accepts ``"4GiB"``.
    """

    precisions: tuple[str, ...] = ("fp16", "int8")
    workspace: str | None = None
    opt_level: int = 3
    timing_cache: str | None = None
    min_shapes: str | None = None
    opt_shapes: str | None = None
    max_shapes: str | None = None
    hardware_compat: str = "none"
    version_compatible: bool = False
    legacy_precision_flags: bool = False
    components: tuple[str, ...] | None = None
    device_index: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "precisions", tuple(self.precisions))
        if self.components is not None:
            object.__setattr__(self, "components", tuple(self.components))
        bad = [p for p in self.precisions if p not in ("fp32", "fp16", "int8")]
        if bad or not self.precisions:
            raise ConfigError(f"[build] precisions {list(self.precisions)}: choose from fp32, fp16, int8.")

    def build_config(self, out_dir: Path, precision: str) -> Any:
        """The engine builder's ``BuildConfig`` for one precision of ``out_dir``."""
        from trt_pipeline.engine.options import BuildConfig

        return BuildConfig.from_options(
            out_dir, **{precision: True}, workspace=self.workspace, opt_level=self.opt_level,
            timing_cache=self.timing_cache, min_shapes=self.min_shapes, opt_shapes=self.opt_shapes,
            max_shapes=self.max_shapes, hardware_compat=self.hardware_compat,
            version_compatible=self.version_compatible, legacy_precision_flags=self.legacy_precision_flags,
            components=self.components, device_index=self.device_index,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class PipelineSection:
    """The ``[pipeline]`` table."""

    checkpoint: str | None = None
    out: str | None = None
    preset: str = "tiny"
    seed: int = 0
    skip: tuple[str, ...] = ()
    rehash: bool = False


@dataclass(frozen=True)
class Section:
    """One pipeline.toml section: the config class it maps onto (resolved lazily)."""

    name: str
    module: str
    cls_name: str
    stage: str | None  # pipeline stage it configures

    def cls(self) -> type:
        return getattr(importlib.import_module(self.module), self.cls_name)


#: pipeline.toml sections (the single source of truth for keys: the dataclass fields).
SECTIONS: dict[str, Section] = {
    "pipeline": Section("pipeline", __name__, "PipelineSection", None),
    "export": Section("export", "trt_pipeline.config", "ExportConfig", "export"),
    "fp16": Section("fp16", "trt_pipeline.config", "Fp16Config", "fp16"),
    "int8": Section("int8", "trt_pipeline.config", "Int8Config", "int8"),
    "build": Section("build", __name__, "BuildStageConfig", "build"),
    "compare": Section("compare", "trt_pipeline.config", "CompareConfig", "compare"),
    "bench": Section("bench", "trt_pipeline.config", "BenchConfig", "bench"),
}


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


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _check_value(value: Any, hint: Any) -> tuple[bool, Any]:
    """(ok, converted value) for a TOML value against a dataclass field's type hint."""
    if hint is Any or hint is object:
        return True, value
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            if option is type(None):
                continue
            ok, converted = _check_value(value, option)
            if ok:
                return True, converted
        return False, value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False, value
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        element = args[0] if args else Any
        converted = []
        for item in value:
            ok, item = _check_value(item, element)
            if not ok:
                return False, value
            converted.append(item)
        return True, tuple(converted)
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        return isinstance(value, dict), value
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if hint is str:
        return isinstance(value, str), value
    if hint is Path:
        return isinstance(value, str), Path(value) if isinstance(value, str) else value
    if isinstance(hint, type):
        return isinstance(value, hint), value
    return True, value


def build_section(cls: type, table: Mapping[str, Any], section: str, source: Path | str,
                  defaults: Mapping[str, Any] | None = None) -> Any:
    """Instantiate ``cls`` from a TOML table (over ``defaults``), refusing unknown keys and mistyped values."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls, vars(importlib.import_module(cls.__module__)))
    kwargs = {}
    for key, value in table.items():
        if key not in fields:
            raise ConfigError(
                f"unknown key {key!r} in section [{section}] of {source}.",
                path=source,
                hint=f"valid keys of [{section}]: {', '.join(fields)}.",
            )
        ok, converted = _check_value(value, hints.get(key, Any))
        if not ok:
            raise ConfigError(
                f"[{section}] {key} = {value!r} in {source}: expected {_type_name(hints.get(key, Any))}.",
                path=source,
            )
        kwargs[key] = converted
    kwargs = {**(defaults or {}), **kwargs}
    try:
        return cls(**kwargs)
    except ConfigError as error:
        raise ConfigError(f"[{section}] in {source}: {error.message}", path=source, hint=error.hint) from None
    except TypeError as error:
        raise ConfigError(f"[{section}] in {source}: {error}", path=source) from None


def read_toml(path: Path | str) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"pipeline config {path} not found.", path=path,
                          hint="pass an existing file, e.g. --config examples/pipeline.toml.")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path} is not valid TOML: {error}", path=path) from None


def parse_pipeline_config(data: Mapping[str, Any], source: Path | str = "<pipeline.toml>") -> PipelineConfig:
    """Map parsed TOML onto a :class:`PipelineConfig` (see the module docstring for sections)."""
    unknown = [name for name in data if name not in SECTIONS]
    if unknown:
        raise ConfigError(
            f"unknown section [{unknown[0]}] in {source}.",
            path=source,
            hint=f"sections: {', '.join(f'[{s}]' for s in SECTIONS)}.",
        )
    for name, table in data.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{name} in {source} must be a table ([{name}]), got a {type(table).__name__}.", path=source)
    built: dict[str, Any] = {}
    for name in SECTIONS:
        if name not in data and name not in PIPELINE_DEFAULTS:
            continue
        table = data.get(name, {})
        section = SECTIONS[name]
        try:
            cls = section.cls()
        except (ImportError, AttributeError) as error:
            if name not in data:  # only pipeline defaults for a stage that is not installed
                continue
            raise ConfigError(
                f"section [{name}] of {source} configures a stage that is not available in this installation ({error}).",
                path=source,
            ) from None
        built[name] = build_section(cls, table, name, source, defaults=PIPELINE_DEFAULTS.get(name))
    pipeline = built.pop("pipeline", PipelineSection())
    try:
        return PipelineConfig(
            checkpoint=pipeline.checkpoint, out=pipeline.out, preset=pipeline.preset, seed=pipeline.seed,
            skip=pipeline.skip, rehash=pipeline.rehash,
            export=built.pop("export", ExportConfig()), bench=built.pop("bench", BenchConfig()),
            sections=built, source=Path(source) if not str(source).startswith("<") else None,
        )
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


def section_config(cfg: PipelineConfig, name: str, default: Callable[[], Any] | None = None) -> Any:
    """The config object of section ``name``: from the TOML, else the class defaults."""
    if name == "export":
        return cfg.export
    if name == "bench":
        return cfg.bench
    if name in cfg.sections:
        return cfg.sections[name]
    if default is not None:
        return default()
    return SECTIONS[name].cls()()


def config_json(obj: Any) -> Any:
    """JSON form of a stage config (``to_dict`` when it has one) for hashing and reports."""
    if obj is None:
        return None
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    return obj


__all__ = [
    "PIPELINE_DEFAULTS",
    "PIPELINE_STAGES",
    "SECTIONS",
    "BuildStageConfig",
    "build_section",
    "config_json",
    "load_pipeline_config",
    "parse_pipeline_config",
    "read_toml",
    "section_config",
]
