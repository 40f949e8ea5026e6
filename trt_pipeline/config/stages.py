"""Frozen per-stage configurations (pydantic dataclasses).

A ``pipeline.toml`` maps section by section onto these classes (:mod:`trt_pipeline.config.pipeline`);
CLI options build the same objects. Stages receive only their own config, and the config's JSON
form is hashed into the stage manifest so an unchanged stage can be skipped. pydantic checks the
field types and refuses unknown keys; the ``__post_init__`` checks below are the ranges and
cross-field rules a type cannot say, each raising a :class:`~trt_pipeline.errors.ConfigError`
that names the option.
"""

from __future__ import annotations

import dataclasses
from dataclasses import field
from pathlib import Path
from typing import Any

from pydantic.dataclasses import dataclass

from trt_pipeline.accuracy.gates import (
    GATED_PRECISIONS,
    PrecisionGates,
    check_gate_key,
    parse_gate_value,
    with_overrides,
)
from trt_pipeline.config.base import STAGE_CONFIG, to_dict
from trt_pipeline.errors import ConfigError
from trt_pipeline.precisions import check_precision

#: Precision folders ``OUT/onnx/PRECISION`` that ``autoglm-trt compare`` knows (in report order);
#: the gate table itself is :data:`trt_pipeline.accuracy.gates.DEFAULT_GATES`.
COMPARE_PRECISIONS = GATED_PRECISIONS

COMPONENTS = ("vision_encoder", "decoder")


def _check_components(components: Any) -> None:
    unknown = [c for c in components if c not in COMPONENTS]
    if unknown or not components:
        raise ConfigError(f"unknown component(s) {unknown}; choose from {list(COMPONENTS)}.")


def _newest_onnx_opset() -> int:
    """The newest default-domain opset the installed onnx package defines (the exporter's bound)."""
    import onnx

    return int(onnx.defs.onnx_opset_version())


def _check_at_least(cfg: Any, low: int, *names: str, prefix: str = "--") -> None:
    """``name >= low`` for each of ``names`` (None allowed), naming the CLI option in the error."""
    for name in names:
        value = getattr(cfg, name)
        if value is not None and value < low:
            option = f"--{name.replace('_', '-')}" if prefix == "--" else f"{prefix}{name}"
            raise ConfigError(f"{option} must be >= {low}, got {value}.")


@dataclass(frozen=True, config=STAGE_CONFIG)
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


@dataclass(frozen=True, config=STAGE_CONFIG)
class ExportConfig:
    """Options of ``autoglm-trt export`` (``[export]`` in pipeline.toml)."""

    opset: int | None = None  # None: the decoder_ops flavour's default (18 portable, 23 fused / onnxruntime)
    decoder_ops: str = "portable"  # portable | fused | onnxruntime (trt_pipeline.models.glm4v.decoder_ops.DECODER_OPS)
    # concat | inplace (fused) | shared (onnxruntime): decoder_ops.KV_CACHES_OF; None: the flavour's first
    kv_cache: str | None = None
    # portable | onnxruntime (decoder_ops.VISION_OPS); None: the decoder flavour's (onnxruntime with onnxruntime)
    vision_ops: str | None = None
    components: tuple[str, ...] = COMPONENTS
    # Request shapes: a named workload (trt_pipeline.export.workloads) sets each one; a value
    # given here overrides it. None: phone-agent for real-width checkpoints, tiny otherwise.
    workload: str | None = None
    max_batch: int | None = None
    max_seq: int | None = None
    max_kv: int | None = None
    min_image_tokens: int | None = None
    max_image_tokens: int | None = None  # None: from the image processor's pixel limits
    max_pixels: int | None = None  # pixels (h x w) of one image; None: the workload's / processor's
    external_data: bool | None = None  # None: automatic above 2 GB
    simplify: bool = True
    validate: bool = True
    dtype: str = "auto"  # auto = the checkpoint's dtype (trt_pipeline.export.dtypes)
    streaming: bool | None = None  # None: weight-free trace + streamed weights above 2 GiB (export.streaming)
    atol_logits: float = 1e-4
    atol_vision: float = 1e-5
    allow_missing_tokenizer: bool = False  # export without tokenizer/chat template/image processor (warning)

    def __post_init__(self) -> None:
        from trt_pipeline.models.glm4v.decoder_ops import (
            check_kv_cache,
            check_vision_ops,
            default_kv_cache,
            default_vision_ops,
        )

        _check_components(self.components)
        self._resolve_opset()
        if self.kv_cache is None:
            object.__setattr__(self, "kv_cache", default_kv_cache(self.decoder_ops))
        check_kv_cache(self.decoder_ops, self.kv_cache)
        if self.vision_ops is None:
            object.__setattr__(self, "vision_ops", default_vision_ops(self.decoder_ops))
        check_vision_ops(self.vision_ops, "auto")
        newest = _newest_onnx_opset()
        if self.opset > newest:
            raise ConfigError(f"--opset {self.opset} is newer than the installed onnx knows (newest: {newest}).",
                              hint="pass an opset between 17 and that; 18 is the default and what TensorRT 10/11 parse.")
        _check_at_least(self, 1, "max_batch", "max_seq", "min_image_tokens", "max_kv", "max_pixels")
        if self.dtype not in ("auto", "bfloat16", "float16", "float32"):
            raise ConfigError(f"--dtype must be auto, bfloat16, float16 or float32, got {self.dtype!r}.")
        if (self.max_image_tokens is not None and self.min_image_tokens is not None
                and self.max_image_tokens < self.min_image_tokens):
            raise ConfigError(
                f"--max-image-tokens {self.max_image_tokens} < --min-image-tokens {self.min_image_tokens}."
            )

    def _resolve_opset(self) -> None:
        """Fill in the flavour's default opset; refuse an opset below what the flavour's ops need."""
        from trt_pipeline.models.glm4v.decoder_ops import DECODER_OPS, DECODER_OPS_DEFAULT_OPSET, DECODER_OPS_MIN_OPSET

        if self.decoder_ops not in DECODER_OPS:
            raise ConfigError(f"--decoder-ops must be one of {', '.join(DECODER_OPS)}, got {self.decoder_ops!r}.")
        if self.opset is None:
            object.__setattr__(self, "opset", DECODER_OPS_DEFAULT_OPSET[self.decoder_ops])
        low = DECODER_OPS_MIN_OPSET[self.decoder_ops]
        if self.opset < low:
            why = ("LayerNormalization needs opset >= 17" if self.decoder_ops == "portable" else
                   "its RotaryEmbedding and RMSNormalization ops are opset 23" if self.decoder_ops == "onnxruntime" else
                   "its Attention, RotaryEmbedding and RMSNormalization ops are opset 23")
            raise ConfigError(f"--opset {self.opset} is too old for --decoder-ops {self.decoder_ops}: {why}.",
                              hint=f"pass --opset {low} or higher, or leave --opset out.")

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


@dataclass(frozen=True, config=STAGE_CONFIG)
class SimplifyConfig:
    """Options of ``autoglm-trt simplify``."""

    check_n: int = 2
    atol: float = 1e-5
    skip_above_bytes: int = 2 * 1024**3 - 1024**2

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


#: Backends benchmarked by default; missing ones (no fp16/int8 ONNX, no TensorRT) are skipped with a line.
BENCH_BACKENDS = ("torch", "ort-fp32", "ort-fp16", "ort-int8", "trt-fp16")


@dataclass(frozen=True, config=STAGE_CONFIG)
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
    inter_op_threads: int | None = 1  # ONNX Runtime inter-op threads (sequential execution: unused)
    io_binding: bool = True  # ONNX Runtime outputs into reused buffers (runtime/ort_binding.py)
    clock: str = "wall"  # wall | cpu (CPU time of the one measuring thread: needs threads = 1; bench/measure.py)
    isolate: bool = True  # each backend in its own child process (clean peak RSS per backend)
    bandwidth_mib: int = 256
    bandwidth_repeats: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.backends:
            raise ConfigError("bench needs at least one backend (--backends torch,ort-fp32,...).")
        for name in ("prompt_lengths", "context_lengths"):
            values = getattr(self, name)
            if not values or any(v < 1 for v in values):
                raise ConfigError(f"bench {name} must be a non-empty list of integers >= 1, got {list(values)}.")
        _check_at_least(self, 0, "warmup", "image_patches", prefix="bench ")
        _check_at_least(self, 1, "batch_size", "iterations", "decode_steps", "bandwidth_mib", "bandwidth_repeats",
                        "threads", "inter_op_threads", prefix="bench ")
        if self.clock not in ("wall", "cpu"):
            raise ConfigError(f"bench clock must be wall or cpu, got {self.clock!r}.")
        if self.clock == "cpu" and self.threads != 1:
            raise ConfigError("bench --clock cpu times the CPU of the one calling thread: pass --threads 1.")

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


@dataclass(frozen=True, config=STAGE_CONFIG)
class CompareConfig:
    """Options of ``autoglm-trt compare`` (``[compare]`` in pipeline.toml).

    ``precisions`` None compares every precision folder that exists and skips the missing ones
    with a line; an explicit tuple makes a missing folder an error. ``tolerances`` overrides
    default gates by key: ``PRECISION.GROUP.METRIC`` (GROUP: image_features, logits, present;
    METRIC: atol, cosine, p99_rel; value None/'off' removes the gate), ``PRECISION.tokens``
    (min exact-match rate; 'off' = 0) or ``PRECISION.teacher_forced`` (min teacher-forced agreement), e.g. ``{"fp16.logits.cosine": 0.999, "int8.tokens": 0.25}``.
    """

    precisions: tuple[str, ...] | None = None
    engines: bool = False
    data: Path | None = None  # held-out folder (default: calibration/heldout of the checkout)
    report_dir: Path | None = None  # default OUT/reports
    checkpoint: Path | None = None  # reference checkpoint (default: the one named in export.json)
    max_items: int | None = None
    max_new_tokens: int = 16
    tokens: bool = True
    extremes: bool = True
    torch_export: bool = True
    quantile: float = 0.99
    tolerances: dict[str, float | str | None] | tuple[tuple[str, float | str | None], ...] = ()  # stored as sorted pairs
    seed: int = 0
    verbose: bool = False

    def __post_init__(self) -> None:
        if self.precisions is not None:
            precisions = tuple(dict.fromkeys(p.strip() for p in self.precisions if p.strip()))
            if not precisions:
                raise ConfigError(f"no precision given; choose from {', '.join(COMPARE_PRECISIONS)}.")
            for precision in precisions:
                check_precision(precision, COMPARE_PRECISIONS)
            object.__setattr__(self, "precisions", precisions)
        _check_at_least(self, 1, "max_items", "max_new_tokens")
        if not 0.0 < self.quantile < 1.0:
            raise ConfigError(f"compare quantile must lie in (0, 1), got {self.quantile}.")
        pairs = self.tolerances.items() if isinstance(self.tolerances, dict) else self.tolerances
        parsed: dict[str, float | None] = {}
        for key, value in pairs:
            check_gate_key(str(key))
            parsed[str(key)] = parse_gate_value(str(key), value)
        object.__setattr__(self, "tolerances", tuple(sorted(parsed.items())))

    @property
    def explicit_precisions(self) -> bool:
        return self.precisions is not None

    @property
    def requested_precisions(self) -> tuple[str, ...]:
        return self.precisions if self.precisions is not None else COMPARE_PRECISIONS

    def gates(self, precision: str) -> PrecisionGates:
        """Default gates of ``precision`` with this config's overrides applied."""
        return with_overrides(precision, self.tolerances)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["tolerances"] = dict(self.tolerances)
        data["gates"] = {p: dataclasses.asdict(self.gates(p)) for p in COMPARE_PRECISIONS}
        return data


# --- precision variants: fp16 (AutoCast) and int8 (Q/DQ) ----------------------------------------

#: Precision a component can take inside a precision folder (``onnx/int8`` may mix them).
COMPONENT_PRECISIONS = ("fp32", "fp16", "int8")
#: INT8 activation-range methods of ``autoglm-trt precision int8 --method``.
INT8_METHODS = ("entropy", "max", "percentile")


def _check_decode(cfg: Any) -> None:
    if cfg.decode_steps < 0 or cfg.max_new_tokens < 1:
        raise ConfigError("decode_steps must be >= 0 and max_new_tokens >= 1.")


@dataclass(frozen=True, config=STAGE_CONFIG)
class Fp16Config:
    """Options of ``autoglm-trt precision fp16`` (``[fp16]`` in pipeline.toml).

    ``calib`` is the calibration root holding ``calib/`` (AutoCast's reference run) and
    ``heldout/`` (accuracy evaluation); None = ``calibration/`` of the source checkout.
    ``calib_samples``/``heldout_samples`` bound the work (None = every item of the split).
    Gates (on the decoder logits vs the fp32 ONNX): ``min_cosine`` and ``max_p99_rel``.
    """

    calib: Path | None = None
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
        _check_components(self.components)
        _check_at_least(self, 1, "calib_samples", "heldout_samples")
        _check_decode(self)
        if self.data_max <= 0 or self.init_max <= 0:
            raise ConfigError("data_max and init_max must be > 0.")

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


def _check_int8_search(cfg: Any) -> None:
    """``--target-token-agreement`` needs a held-out set and an int8 decoder; alpha lies in [0, 1]."""
    target = cfg.target_token_agreement
    if target is not None:
        if not 0.0 < target <= 1.0:
            raise ConfigError(f"--target-token-agreement must lie in (0, 1], got {target}.")
        if not cfg.evaluate:
            raise ConfigError("--target-token-agreement needs the held-out set: drop --no-evaluate.")
        if cfg.components.get("decoder") != "int8":
            raise ConfigError("--target-token-agreement searches the decoder's INT8 exclusions: it needs "
                              "--decoder-precision int8.")
    if not 0.0 <= cfg.smooth_alpha <= 1.0:
        raise ConfigError(f"--smooth-alpha must lie in [0, 1], got {cfg.smooth_alpha}.")


@dataclass(frozen=True, config=STAGE_CONFIG)
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
    ``target_token_agreement``: keep the fewest most INT8-sensitive decoder node groups in
    ``high_precision_dtype`` so that the held-out teacher-forced agreement reaches it
    (:mod:`trt_pipeline.quantize.int8_search`). ``smooth``: SmoothQuant-style scaling of the GEMM
    inputs with strength ``smooth_alpha`` folded into the graph before calibration
    (:mod:`trt_pipeline.quantize.smoothing`).
    """

    calib: Path | None = None
    method: str = "percentile"
    percentile: float = 99.99
    calib_samples: int | None = 16
    heldout_samples: int | None = 8
    components: dict[str, str] = field(default_factory=lambda: {"vision_encoder": "int8", "decoder": "int8"})
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
    target_token_agreement: float | None = None
    smooth: bool = False
    smooth_alpha: float = 0.5

    def __post_init__(self) -> None:
        _check_components(self.components)
        _check_int8_search(self)
        bad = {c: p for c, p in self.components.items() if p not in COMPONENT_PRECISIONS}
        if bad:
            raise ConfigError(f"unknown component precision(s) {bad}; choose from {list(COMPONENT_PRECISIONS)}.")
        object.__setattr__(self, "components", {c: self.components[c] for c in COMPONENTS if c in self.components})
        if self.method not in INT8_METHODS:
            raise ConfigError(f"unknown --method {self.method!r}; choose from {', '.join(INT8_METHODS)}.")
        if not 0.0 < self.percentile <= 100.0:
            raise ConfigError(f"--percentile must lie in (0, 100], got {self.percentile}.")
        if self.high_precision_dtype not in ("fp16", "fp32"):
            raise ConfigError(f"high_precision_dtype must be fp16 or fp32, got {self.high_precision_dtype!r}.")
        _check_at_least(self, 1, "calib_samples", "heldout_samples")
        _check_decode(self)

    def fp16_config(self) -> Fp16Config:
        """The AutoCast options used for components marked ``fp16`` in the int8 folder."""
        return Fp16Config(calib=self.calib, calib_samples=self.calib_samples, heldout_samples=self.heldout_samples,
                          keep_io_types=self.keep_io_types, decode_steps=self.decode_steps, evaluate=False)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)
