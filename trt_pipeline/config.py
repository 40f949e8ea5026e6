"""Frozen per-stage configurations.

A pipeline TOML file (``pipeline.toml``) maps section by section onto these dataclasses
(:func:`load_pipeline_toml`); CLI options build the same objects. Stages receive only their own
config, and the config's JSON form is hashed into the stage manifest so an unchanged stage can
be skipped.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from trt_pipeline.errors import ConfigError

COMPONENTS = ("vision_encoder", "decoder")


@dataclass(frozen=True)
class DimRange:
    """min/opt/max of one symbolic axis (these become TensorRT optimization profiles)."""

    min: int
    opt: int
    max: int

    def __post_init__(self) -> None:
        if not (0 <= self.min <= self.opt <= self.max):
            raise ConfigError(f"invalid range min={self.min} opt={self.opt} max={self.max}: need 0 <= min <= opt <= max.")

    def grid(self) -> list[int]:
        """min, an interior value and max (deduplicated): the validation grid of one axis."""
        interior = (self.min + self.max) // 2 if self.max - self.min > 1 else self.opt
        return sorted({self.min, interior, self.max})


@dataclass(frozen=True)
class ExportConfig:
    """Options of ``autoglm-trt export``."""

    opset: int = 18
    components: tuple[str, ...] = COMPONENTS
    max_batch: int = 4
    max_seq: int = 256
    max_kv: int = 512
    min_image_tokens: int = 4
    max_image_tokens: int | None = None  # None: from the checkpoint's image-processor config
    external_data: bool | None = None  # None: automatic above 2 GB
    simplify: bool = True
    validate: bool = True
    dtype: str = "float32"
    atol_logits: float = 1e-4
    atol_vision: float = 1e-5

    def __post_init__(self) -> None:
        unknown = [c for c in self.components if c not in COMPONENTS]
        if unknown or not self.components:
            raise ConfigError(f"unknown component(s) {unknown}; choose from {list(COMPONENTS)}.")
        if self.opset < 17:
            raise ConfigError(f"opset {self.opset} is too old: LayerNormalization needs opset >= 17.")
        for name in ("max_batch", "max_seq", "min_image_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}.")
        if self.max_kv < 1:
            raise ConfigError(f"--max-kv must be >= 1, got {self.max_kv}.")
        if self.max_image_tokens is not None and self.max_image_tokens < self.min_image_tokens:
            raise ConfigError(
                f"--max-image-tokens {self.max_image_tokens} < --min-image-tokens {self.min_image_tokens}."
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class SimplifyConfig:
    """Options of ``autoglm-trt simplify``."""

    check_n: int = 2
    atol: float = 1e-5
    skip_above_bytes: int = 2 * 1024**3 - 1024**2

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ValidateConfig:
    """Options of ``autoglm-trt validate``: tolerances of ONNX Runtime vs transformers."""

    precision: str = "fp32"
    atol_logits: float = 1e-4
    atol_vision: float = 1e-5
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --- bench + pipeline (issue 7) ----------------------------------------------------------------

#: Backends benchmarked by default; missing ones (no fp16/int8 ONNX, no TensorRT) are skipped with a line.
BENCH_BACKENDS = ("torch", "ort-fp32", "ort-fp16", "ort-int8", "trt-fp16")


@dataclass(frozen=True)
class BenchConfig:
    """Options of ``autoglm-trt bench`` and of the pipeline's ``bench`` stage (``[bench]`` in pipeline.toml).

    Lengths outside the export's ranges are dropped with a note (prefill: ``sequence_length``,
    decode context: ``past_sequence_length``). ``threads`` pins the intra-op threads of torch and
    ONNX Runtime to the same number (default: every core), inter-op threads to 1.
    """

    backends: tuple[str, ...] = BENCH_BACKENDS
    prompt_lengths: tuple[int, ...] = (16, 64, 256)
    context_lengths: tuple[int, ...] = (64, 256, 512)
    batch_size: int = 1
    warmup: int = 2
    iterations: int = 10
    decode_steps: int = 32
    image_patches: int | None = None  # None: the export's opt num_patches; 0: no image-prefill figure
    threads: int | None = None
    isolate: bool = True  # each backend in its own child process (clean peak RSS per backend)
    bandwidth_mib: int = 256
    bandwidth_repeats: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("backends", "prompt_lengths", "context_lengths"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not self.backends:
            raise ConfigError("bench needs at least one backend (--backends torch,ort-fp32,...).")
        for name in ("prompt_lengths", "context_lengths"):
            values = getattr(self, name)
            if not values or any(not isinstance(v, int) or v < 1 for v in values):
                raise ConfigError(f"bench {name} must be a non-empty list of integers >= 1, got {list(values)}.")
        for name, low in (("batch_size", 1), ("warmup", 0), ("iterations", 1), ("decode_steps", 1),
                          ("bandwidth_mib", 1), ("bandwidth_repeats", 1)):
            if getattr(self, name) < low:
                raise ConfigError(f"bench {name} must be >= {low}, got {getattr(self, name)}.")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"bench threads must be >= 1, got {self.threads}.")
        if self.image_patches is not None and self.image_patches < 0:
            raise ConfigError(f"bench image_patches must be >= 0, got {self.image_patches}.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: Pipeline stages in execution order (``--force STAGE`` re-runs STAGE and everything after it).
PIPELINE_STAGES = ("checkpoint", "export", "fp16", "int8", "build", "compare", "bench", "report")


@dataclass(frozen=True)
class PipelineConfig:
    """``autoglm-trt pipeline``: where to read and write, what to force, and every stage's config.

    ``checkpoint`` None means: make the built-in ``preset`` checkpoint (tiny) under OUT/checkpoint.
    ``out`` None means ``engines/<checkpoint folder name>`` (``engines/<preset>`` for the built-in one).
    ``sections`` holds the configs of the stages owned by other modules (``fp16``, ``int8``,
    ``build``, ``compare``), keyed by their pipeline.toml section; a missing key means defaults.
    """

    checkpoint: Any = None  # Path | None
    out: Any = None  # Path | None
    preset: str = "tiny"
    seed: int = 0
    force: str | None = None
    skip: tuple[str, ...] = ()
    rehash: bool = False
    export: ExportConfig = field(default_factory=ExportConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    sections: dict[str, Any] = field(default_factory=dict)
    source: Any = None  # the pipeline.toml it was read from (Path | None)

    def __post_init__(self) -> None:
        from pathlib import Path as _Path

        for name in ("checkpoint", "out", "source"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, _Path):
                object.__setattr__(self, name, _Path(value))
        object.__setattr__(self, "skip", tuple(self.skip))
        for stage in (*self.skip, *([self.force] if self.force else [])):
            if stage not in PIPELINE_STAGES:
                raise ConfigError(f"unknown pipeline stage {stage!r}; stages: {', '.join(PIPELINE_STAGES)}.")

    def resolved_out(self) -> Any:
        from pathlib import Path as _Path

        if self.out is not None:
            return self.out
        name = self.checkpoint.resolve().name if self.checkpoint is not None else self.preset
        return _Path("engines") / name


def load_pipeline_toml(path: Any, **overrides: Any) -> PipelineConfig:
    """Read a pipeline.toml into a :class:`PipelineConfig` (see :mod:`trt_pipeline.pipeline_config`)."""
    from trt_pipeline.pipeline_config import load_pipeline_config

    return load_pipeline_config(path, **overrides)


# --- compare (issue 6) ---------------------------------------------------------------------------

#: Precision folders ``OUT/onnx/PRECISION`` that ``autoglm-trt compare`` knows (in report order).
COMPARE_PRECISIONS = ("fp32", "fp16", "int8")

#: Output groups that carry their own gates: the vision encoder's output, the decoder's logits and
#: its KV-cache outputs (``present.*``).
COMPARE_OUTPUT_GROUPS = ("image_features", "logits", "present")


@dataclass(frozen=True)
class OutputGate:
    """Gates of one output group against the PyTorch reference (None: not gated, still reported).

    ``atol``: max |actual - reference|. ``cosine``: min cosine similarity of the flattened tensors.
    ``p99_rel``: 99th percentile (``CompareConfig.quantile``) of |actual - reference| divided by the
    RMS of the reference output (element-wise |a - r| / |r| is unbounded near zero; it is reported
    too, as ``p99_rel_elementwise``, but not gated). Every gate applies to every sample.
    """

    atol: float | None = None
    cosine: float | None = None
    p99_rel: float | None = None


@dataclass(frozen=True)
class PrecisionGates:
    """Per-precision tensor gates and the token-level gate (min whole-sequence exact-match rate)."""

    image_features: OutputGate
    logits: OutputGate
    present: OutputGate
    token_exact_match: float

    def output(self, group: str) -> OutputGate:
        return getattr(self, group)


#: Default gates (see trt_pipeline/compare/tolerances.py for the reasoning behind each number).
DEFAULT_COMPARE_GATES: dict[str, PrecisionGates] = {
    "fp32": PrecisionGates(
        image_features=OutputGate(atol=1e-5, cosine=0.99999),
        logits=OutputGate(atol=1e-4, cosine=0.99999),
        present=OutputGate(atol=1e-4, cosine=0.99999),
        token_exact_match=1.0,
    ),
    "fp16": PrecisionGates(
        image_features=OutputGate(cosine=0.9999, p99_rel=1e-2),
        logits=OutputGate(cosine=0.9999, p99_rel=1e-2),
        present=OutputGate(cosine=0.9999, p99_rel=1e-2),
        token_exact_match=0.9,
    ),
    "int8": PrecisionGates(
        image_features=OutputGate(cosine=0.99),
        logits=OutputGate(cosine=0.99),
        present=OutputGate(cosine=0.99),
        token_exact_match=0.5,
    ),
}


def _parse_gate_value(key: str, value: Any) -> float | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "off", "")):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"tolerance {key}={value!r} is not a number (or 'off').") from None
    if number != number:
        raise ConfigError(f"tolerance {key} is NaN.")
    return number


@dataclass(frozen=True)
class CompareConfig:
    """Options of ``autoglm-trt compare`` (``[compare]`` in pipeline.toml).

    ``precisions`` None compares every precision folder that exists and skips the missing ones
    with a line; an explicit tuple makes a missing folder an error. ``tolerances`` overrides
    default gates by key: ``PRECISION.GROUP.METRIC`` (GROUP: image_features, logits, present;
    METRIC: atol, cosine, p99_rel; value None/'off' removes the gate) or ``PRECISION.tokens``
    (min exact-match rate; 'off' = 0), e.g. ``{"fp16.logits.cosine": 0.999, "int8.tokens": 0.25}``.
    """

    precisions: tuple[str, ...] | None = None
    engines: bool = False
    data: Any = None  # Path | None: held-out folder (default: calibration/heldout of the checkout)
    report_dir: Any = None  # Path | None: default OUT/reports
    checkpoint: Any = None  # Path | None: reference checkpoint (default: the one named in export.json)
    max_items: int | None = None
    max_new_tokens: int = 16
    tokens: bool = True
    extremes: bool = True
    torch_export: bool = True
    quantile: float = 0.99
    tolerances: Any = ()  # Mapping[str, float | None] or pairs; stored as sorted pairs
    seed: int = 0
    verbose: bool = False

    def __post_init__(self) -> None:
        from pathlib import Path as _Path

        for name in ("data", "report_dir", "checkpoint"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, _Path):
                object.__setattr__(self, name, _Path(value))
        if self.precisions is not None:
            precisions = tuple(dict.fromkeys(p.strip() for p in self.precisions if p.strip()))
            unknown = [p for p in precisions if p not in COMPARE_PRECISIONS]
            if unknown or not precisions:
                raise ConfigError(
                    f"unknown precision(s) {unknown or list(self.precisions)}; choose from {', '.join(COMPARE_PRECISIONS)}."
                )
            object.__setattr__(self, "precisions", precisions)
        if self.max_items is not None and self.max_items < 1:
            raise ConfigError(f"--max-items must be >= 1, got {self.max_items}.")
        if self.max_new_tokens < 1:
            raise ConfigError(f"--max-new-tokens must be >= 1, got {self.max_new_tokens}.")
        if not 0.0 < self.quantile < 1.0:
            raise ConfigError(f"compare quantile must lie in (0, 1), got {self.quantile}.")
        pairs = self.tolerances.items() if isinstance(self.tolerances, dict) else self.tolerances
        parsed: dict[str, float | None] = {}
        for key, value in pairs:
            self._check_key(str(key))
            parsed[str(key)] = _parse_gate_value(str(key), value)
        object.__setattr__(self, "tolerances", tuple(sorted(parsed.items())))

    @staticmethod
    def _check_key(key: str) -> None:
        parts = key.split(".")
        metrics = [f.name for f in dataclasses.fields(OutputGate)]
        ok = (
            len(parts) == 2 and parts[0] in COMPARE_PRECISIONS and parts[1] == "tokens"
        ) or (
            len(parts) == 3 and parts[0] in COMPARE_PRECISIONS and parts[1] in COMPARE_OUTPUT_GROUPS
            and parts[2] in metrics
        )
        if not ok:
            raise ConfigError(
                f"unknown tolerance key {key!r}: use PRECISION.GROUP.METRIC or PRECISION.tokens with PRECISION in "
                f"{list(COMPARE_PRECISIONS)}, GROUP in {list(COMPARE_OUTPUT_GROUPS)}, METRIC in {metrics}."
            )

    @property
    def explicit_precisions(self) -> bool:
        return self.precisions is not None

    @property
    def requested_precisions(self) -> tuple[str, ...]:
        return self.precisions if self.precisions is not None else COMPARE_PRECISIONS

    def gates(self, precision: str) -> PrecisionGates:
        """Default gates of ``precision`` with this config's overrides applied."""
        gates = DEFAULT_COMPARE_GATES[precision]
        for key, value in self.tolerances:
            parts = key.split(".")
            if parts[0] != precision:
                continue
            if parts[1] == "tokens":
                gates = dataclasses.replace(gates, token_exact_match=0.0 if value is None else value)
            else:
                group = dataclasses.replace(gates.output(parts[1]), **{parts[2]: value})
                gates = dataclasses.replace(gates, **{parts[1]: group})
        return gates

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["tolerances"] = dict(self.tolerances)
        data["gates"] = {p: dataclasses.asdict(self.gates(p)) for p in COMPARE_PRECISIONS}
        return data


# --- precision variants: fp16 (AutoCast) and int8 (Q/DQ) (issue 4) -----------------------------

#: Precision a component can take inside a precision folder (``onnx/int8`` may mix them).
COMPONENT_PRECISIONS = ("fp32", "fp16", "int8")
#: INT8 activation-range methods of ``autoglm-trt precision int8 --method``.
INT8_METHODS = ("entropy", "max", "percentile")


def _check_samples(name: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {value}.")


@dataclass(frozen=True)
class Fp16Config:
    """Options of ``autoglm-trt precision fp16`` (``[fp16]`` in pipeline.toml).

    ``calib`` is the calibration root holding ``calib/`` (AutoCast's reference run) and
    ``heldout/`` (accuracy evaluation); None = ``calibration/`` of the source checkout.
    ``calib_samples``/``heldout_samples`` bound the work (None = every item of the split).
    Gates (on the decoder logits vs the fp32 ONNX): ``min_cosine`` and ``max_p99_rel``.
    """

    calib: Any = None  # Path | None
    calib_samples: int | None = 8
    heldout_samples: int | None = 8
    keep_io_types: bool = True
    components: tuple[str, ...] = COMPONENTS
    data_max: float = 512.0
    init_max: float = 65504.0
    op_types_to_exclude: tuple[str, ...] = ()
    nodes_to_exclude: tuple[str, ...] = ()
    decode_steps: int = 1
    max_new_tokens: int = 8
    min_cosine: float = 0.9999
    max_p99_rel: float = 1e-2
    evaluate: bool = True

    def __post_init__(self) -> None:
        from pathlib import Path as _Path

        if self.calib is not None and not isinstance(self.calib, _Path):
            object.__setattr__(self, "calib", _Path(self.calib))
        for name in ("components", "op_types_to_exclude", "nodes_to_exclude"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        unknown = [c for c in self.components if c not in COMPONENTS]
        if unknown or not self.components:
            raise ConfigError(f"unknown component(s) {unknown}; choose from {list(COMPONENTS)}.")
        _check_samples("calib_samples", self.calib_samples)
        _check_samples("heldout_samples", self.heldout_samples)
        if self.decode_steps < 0 or self.max_new_tokens < 1:
            raise ConfigError("decode_steps must be >= 0 and max_new_tokens >= 1.")
        if self.data_max <= 0 or self.init_max <= 0:
            raise ConfigError("data_max and init_max must be > 0.")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["calib"] = None if self.calib is None else str(self.calib)
        return data


@dataclass(frozen=True)
class Int8Config:
    """Options of ``autoglm-trt precision int8`` (``[int8]`` in pipeline.toml).

    ``components`` maps each component to the precision it gets inside ``onnx/int8``: ``int8``
    (ModelOpt Q/DQ), ``fp16`` (the AutoCast model) or ``fp32`` (a copy), e.g.
    ``Int8Config(components={"decoder": "int8", "vision_encoder": "fp16"})``.
    ``method``: activation ranges by ``entropy`` (TensorRT's KL threshold), ``max`` or ``percentile``
    (``percentile`` of |x|). Only ``op_types_to_quantize`` nodes get Q/DQ (W8A8 on the GEMMs);
    attention BMMs stay unquantized while ``disable_mha_qdq``; ``nodes_to_exclude`` are regexes.
    ``high_precision_dtype``: dtype of everything not quantized. ``trt_version`` names the
    TensorRT 10 release in the legacy ``calibration.cache`` header. Gate: ``min_cosine`` on the
    decoder logits and the vision features vs the fp32 ONNX.
    """

    calib: Any = None  # Path | None
    method: str = "percentile"
    percentile: float = 99.99
    calib_samples: int | None = 16
    heldout_samples: int | None = 8
    components: Any = field(default_factory=lambda: {"vision_encoder": "int8", "decoder": "int8"})
    op_types_to_quantize: tuple[str, ...] = ("MatMul", "Gemm")
    op_types_to_exclude: tuple[str, ...] = ()
    nodes_to_exclude: tuple[str, ...] = ()
    disable_mha_qdq: bool = True
    high_precision_dtype: str = "fp16"
    keep_io_types: bool = True
    trt_version: str = "10.3.0"
    decode_steps: int = 1
    max_new_tokens: int = 8
    min_cosine: float = 0.99
    evaluate: bool = True

    def __post_init__(self) -> None:
        from pathlib import Path as _Path

        if self.calib is not None and not isinstance(self.calib, _Path):
            object.__setattr__(self, "calib", _Path(self.calib))
        components = dict(self.components.items() if hasattr(self.components, "items") else self.components)
        unknown = [c for c in components if c not in COMPONENTS]
        if unknown or not components:
            raise ConfigError(f"unknown component(s) {unknown}; choose from {list(COMPONENTS)}.")
        bad = {c: p for c, p in components.items() if p not in COMPONENT_PRECISIONS}
        if bad:
            raise ConfigError(f"unknown component precision(s) {bad}; choose from {list(COMPONENT_PRECISIONS)}.")
        object.__setattr__(self, "components", {c: components[c] for c in COMPONENTS if c in components})
        for name in ("op_types_to_quantize", "op_types_to_exclude", "nodes_to_exclude"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.method not in INT8_METHODS:
            raise ConfigError(f"unknown --method {self.method!r}; choose from {', '.join(INT8_METHODS)}.")
        if not 0.0 < self.percentile <= 100.0:
            raise ConfigError(f"--percentile must lie in (0, 100], got {self.percentile}.")
        if self.high_precision_dtype not in ("fp16", "fp32"):
            raise ConfigError(f"high_precision_dtype must be fp16 or fp32, got {self.high_precision_dtype!r}.")
        _check_samples("calib_samples", self.calib_samples)
        _check_samples("heldout_samples", self.heldout_samples)
        if self.decode_steps < 0 or self.max_new_tokens < 1:
            raise ConfigError("decode_steps must be >= 0 and max_new_tokens >= 1.")

    def fp16_config(self) -> Fp16Config:
        """The AutoCast options used for components marked ``fp16`` in the int8 folder."""
        return Fp16Config(calib=self.calib, calib_samples=self.calib_samples, heldout_samples=self.heldout_samples,
                          keep_io_types=self.keep_io_types, decode_steps=self.decode_steps, evaluate=False)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["calib"] = None if self.calib is None else str(self.calib)
        data["components"] = dict(self.components)
        return data
