"""INT8 by ModelOpt ONNX PTQ: an fp32 ONNX graph -> explicit Q/DQ ONNX, calibrated on CPU.

TensorRT 11 has no ``BuilderFlag.INT8`` and no ``IInt8Calibrator``: INT8 comes from explicit
QuantizeLinear/DequantizeLinear pairs in the ONNX graph. :func:`quantize_int8_file` wraps
``modelopt.onnx.quantization.quantize(quantize_mode="int8")`` with ``calibration_eps=["cpu"]``:

1. **Ranges.** The fp32 graph runs on ONNX Runtime (CPU) over the calibration feeds with the
   inputs and outputs of every candidate node (``op_types_to_quantize``, default MatMul/Gemm:
   W8A8 on the linear layers, the usual transformer recipe) marked as outputs; per tensor the
   symmetric range ``amax`` is computed with the requested method:
   ``max`` (max |x| over all feeds), ``entropy`` (TensorRT's KL-divergence threshold, ONNX
   Runtime's ``HistogramCollector``, 128 quantized bins) or ``percentile`` (the given percentile of
   |x|, 2048-bin histogram). ModelOpt itself only offers entropy and max (anything else silently
   becomes max), so the ranges are computed here for every method and handed to ModelOpt as a
   calibration cache: its Q/DQ scales and our ``calibration.cache`` are then the same numbers.
2. **Q/DQ placement.** ModelOpt's TensorRT-friendly placement: per-channel weight Q/DQ,
   per-tensor activation Q/DQ on the selected nodes, the rest converted to
   ``high_precision_dtype`` (fp16 by default, what a strongly typed TensorRT engine runs; the graph
   I/O keeps its dtypes). Attention BMMs (ModelOpt's MHA pattern) are excluded by default
   (``disable_mha_qdq``): quantizing softmax probabilities and Q·K^T costs most of the accuracy
   (measured: vision-feature cosine 0.88 with them vs 0.99 without, tiny preset).
3. **Legacy cache.** :func:`write_calibration_cache` writes the TensorRT 10 implicit-INT8
   calibration cache (``IInt8Calibrator::writeCalibrationCache`` text format) for builds that still
   use ``BuilderFlag.INT8`` with an fp32 ONNX (JetPack 6 / TensorRT 10.x)::

       TRT-100300-EntropyCalibration2
       tensor_name: 3c010204

   one line per tensor, the value being the 8 hex digits of the IEEE-754 float32 *scale*
   (``amax / 127``), most significant byte first (``struct.pack("!f", scale).hex()``). Sources:
   ModelOpt's reader ``modelopt/onnx/quantization/calib_utils.py:import_scales_from_calib_cache``
   (skips the header line, ``struct.unpack("!f", bytes.fromhex(value))``), NVIDIA TAO's
   ``keras_exporter._calibration_cache_from_dict`` (``"TRT-{version}-EntropyCalibration2"`` header,
   ``scale = amax / 127.0`` as the hex of the float's bits); the version field is TensorRT's
   ``NV_TENSORRT_VERSION`` (major*10000 + minor*100 + patch from 10.0 on, e.g. ``100300``).

**Calibrate once.** ModelOpt's ``quantize`` always runs ONNX Runtime's calibrator over the reader it is
given (its ``_quantize_static`` has no way to take precomputed ranges) and only afterwards replaces
the scales by the cache's. Handing it every calibration feed therefore calibrated the graph a second
time for nothing. ModelOpt now gets the *first* feed only (its GEMV / shape heuristics need one
prefill), the ranges come from :func:`calibrate_int8` once per graph, and an :class:`Int8Calibration`
is reused by every quantization of the same graph (the sensitivity search quantizes the decoder
many times: :mod:`trt_pipeline.quantize.sensitivity`).

``quantize_int8_file`` is path based (external data supported: the model is staged in a scratch
folder with its ``.data`` file symlinked, ModelOpt writes its intermediates there, never next to
the source); :func:`quantize_int8_model` is the ModelProto -> ModelProto form.
"""

from __future__ import annotations

import contextlib
import io
import re
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from trt_pipeline.errors import CalibrationError, ConfigError, OnnxModelError
from trt_pipeline.graph.autocast import external_data_files
from trt_pipeline.graph.half_norms import reciprocal_norms
from trt_pipeline.quantize.calibration_cache import (  # noqa: F401 - the cache format lives there
    CACHE_ALGORITHM,
    DEFAULT_TRT_VERSION,
    hex_to_scale,
    read_calibration_cache,
    scale_to_hex,
    trt_version_number,
    write_calibration_cache,
)

METHODS = ("entropy", "max", "percentile")
HIGH_PRECISION_DTYPES = ("fp16", "fp32")
DEFAULT_OP_TYPES = ("MatMul", "Gemm")


# --- calibration data reader ----------------------------------------------------------------
def feed_list_reader(feeds: Sequence[dict[str, np.ndarray]]) -> Any:
    """An ONNX Runtime ``CalibrationDataReader`` over a list of feeds (what ModelOpt consumes).

    ``get_first`` (used by ModelOpt's shape heuristics) returns the first feed without advancing.
    """
    from onnxruntime.quantization.calibrate import CalibrationDataReader

    class FeedListReader(CalibrationDataReader):
        def __init__(self, data: Sequence[dict[str, np.ndarray]]) -> None:
            self.data = list(data)
            self._iter = iter(self.data)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._iter, None)

        def get_first(self) -> dict[str, np.ndarray]:
            return self.data[0]

        def rewind(self) -> None:
            self._iter = iter(self.data)

        def __len__(self) -> int:
            return len(self.data)

    return FeedListReader(feeds)


# --- staging (never write next to the source model) -----------------------------------------
def stage_model(src: Path, folder: Path, name: str | None = None) -> Path:
    """Copy ``src`` and its external data files into ``folder`` (ModelOpt writes beside its input).

    Links are not an option: ONNX Runtime refuses external data resolving outside the model's folder
    (symlinks) and onnx >= 1.19 refuses external data files with several hard links.
    """
    src = Path(src)
    folder.mkdir(parents=True, exist_ok=True)
    dst = folder / (name or src.name)
    shutil.copy2(src, dst)
    for location in external_data_files(onnx.load(str(src), load_external_data=False)):
        source = (src.parent / location).resolve()
        link = folder / location
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, link)
    return dst


# --- ranges ---------------------------------------------------------------------------------
def candidate_nodes(model: onnx.ModelProto, op_types: Iterable[str]) -> list[onnx.NodeProto]:
    wanted = set(op_types)
    return [node for node in model.graph.node if node.op_type in wanted]


def float_activations(model: onnx.ModelProto, nodes: Iterable[onnx.NodeProto]) -> list[str]:
    """Non-initializer float inputs and outputs of ``nodes`` (the tensors to calibrate)."""
    inits = {t.name for t in model.graph.initializer}
    consts = {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    types = {v.name: v.type.tensor_type.elem_type
             for v in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output)}
    names: list[str] = []
    for node in nodes:
        for name in (*node.input, *node.output):
            if not name or name in inits or name in consts or name in names:
                continue
            if types.get(name, onnx.TensorProto.FLOAT) in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16):
                names.append(name)
    return names


def collect_amax(
    src: Path | str,
    feeds: Sequence[dict[str, np.ndarray]],
    tensors: Sequence[str],
    method: str = "entropy",
    percentile: float = 99.99,
    stage: bool = True,
) -> dict[str, float]:
    """Symmetric range (amax) of each tensor over all feeds, by ``method``; fp32 model on ORT CPU.

    The model with the tensors marked as outputs is written to a scratch copy (``stage=True``) or,
    with ``stage=False``, as a hidden file beside ``src`` (for an already staged copy: no second
    copy of its external data).
    """
    from onnxruntime.quantization.calibrate import HistogramCollector

    from trt_pipeline.runtime.onnxruntime_runner import session

    if method not in METHODS:
        raise ConfigError(f"unknown calibration method {method!r}; choose from {list(METHODS)}.")
    if not feeds:
        raise CalibrationError("no calibration feeds: the calibration split produced no inputs for this component.")
    src = Path(src)
    model = onnx.load(str(src), load_external_data=False)
    existing = {o.name for o in model.graph.output}
    inputs = {i.name for i in model.graph.input}
    for name in tensors:
        if name not in existing and name not in inputs:
            model.graph.output.append(onnx.ValueInfoProto(name=name))
    amax: dict[str, float] = {name: 0.0 for name in tensors}
    collector = None
    if method != "max":
        collector = HistogramCollector(
            method=method, symmetric=method == "percentile", num_bins=128 if method == "entropy" else 2048,
            num_quantized_bins=128, percentile=percentile, scenario="same",
        )
    with tempfile.TemporaryDirectory(prefix=".amax.", dir=None if stage else src.parent) as scratch:
        staged = stage_model(src, Path(scratch)) if stage else src.with_name(f".{Path(scratch).name}.{src.name}")
        onnx.save(model, str(staged))
        sess = session(staged)
        graph_inputs = {i.name for i in sess.get_inputs()}
        names = [name for name in tensors if name not in graph_inputs]
        for feed in feeds:
            values = dict(zip(names, sess.run(names, feed)))
            values.update({name: np.asarray(feed[name]) for name in tensors if name in graph_inputs})
            for name, value in values.items():
                if value.size:
                    amax[name] = max(amax[name], float(np.max(np.abs(value))))
            if collector is not None:
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                    collector.collect({k: [v.astype(np.float32)] for k, v in values.items() if v.size})
        del sess
        if not stage:
            staged.unlink()
    if collector is not None:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            result = collector.compute_collection_result()
        for name, value in result.items():
            low, high = float(np.asarray(value[0])), float(np.asarray(value[1]))
            amax[name] = max(abs(low), abs(high))
    return amax


@dataclass
class Int8Calibration:
    """Activation ranges of one fp32 graph, measured once and reused by every quantization of it.

    ``amax`` maps each candidate tensor (inputs/outputs of ``op_types`` nodes) to its symmetric
    range; ``first_feed`` is what ModelOpt still runs (its shape heuristics need one prefill).
    """

    method: str
    percentile: float | None
    op_types: tuple[str, ...]
    amax: dict[str, float]
    first_feed: dict[str, np.ndarray]
    feeds: int
    seconds: float

    @property
    def ranged(self) -> dict[str, float]:
        """Tensors with a non-zero range (the ones that can be quantized)."""
        return {name: value for name, value in self.amax.items() if value > 0}


def calibrate_int8(
    src: Path | str,
    feeds: Sequence[dict[str, np.ndarray]],
    *,
    method: str = "entropy",
    percentile: float = 99.99,
    op_types_to_quantize: Sequence[str] = DEFAULT_OP_TYPES,
) -> Int8Calibration:
    """The one calibration pass over ``feeds`` of the fp32 graph ``src`` (ONNX Runtime, CPU)."""
    src = Path(src)
    _check_quantize_args(src, feeds, method, percentile, "fp16")
    start = time.perf_counter()
    model = onnx.load(str(src), load_external_data=False)
    tensors = float_activations(model, candidate_nodes(model, op_types_to_quantize))
    amax = collect_amax(src, feeds, tensors, method, percentile)
    return Int8Calibration(
        method=method, percentile=percentile if method == "percentile" else None,
        op_types=tuple(op_types_to_quantize), amax=amax, first_feed=dict(feeds[0]), feeds=len(feeds),
        seconds=round(time.perf_counter() - start, 3),
    )


# --- quantization ---------------------------------------------------------------------------
@dataclass
class Int8Report:
    """What ModelOpt PTQ did to one graph."""

    method: str
    percentile: float | None
    op_types_to_quantize: list[str]
    high_precision_dtype: str
    nodes_quantized: list[str]
    nodes_excluded: dict[str, str] = field(default_factory=dict)  # name -> reason
    qdq_counts: dict[str, int] = field(default_factory=dict)
    calibrated_tensors: int = 0
    calibration_feeds: int = 0
    cache_scales: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    calibration_seconds: float = 0.0  # the one calibration pass (0 when a calibration was reused)
    modelopt_seconds: float = 0.0  # Q/DQ placement + ModelOpt's one-feed shape run + precision conversion

    def to_dict(self, with_scales: bool = False) -> dict[str, Any]:
        data = asdict(self)
        if not with_scales:
            data["cache_scales"] = len(self.cache_scales)
        return data


def quantized_nodes(model: onnx.ModelProto, op_types: Iterable[str] = DEFAULT_OP_TYPES) -> list[str]:
    """Nodes of ``op_types`` with at least one input coming from a DequantizeLinear."""
    dq_outputs = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    producers = {o: n for n in model.graph.node for o in n.output}

    def from_dq(name: str) -> bool:  # through Cast nodes inserted by the fp16 conversion
        for _ in range(4):
            if name in dq_outputs:
                return True
            node = producers.get(name)
            if node is None or node.op_type != "Cast":
                return False
            name = node.input[0]
        return False

    wanted = set(op_types)
    return [n.name for n in model.graph.node if n.op_type in wanted and any(from_dq(i) for i in n.input)]


def qdq_counts(model: onnx.ModelProto) -> dict[str, int]:
    counts = Counter(n.op_type for n in model.graph.node)
    return {"QuantizeLinear": counts["QuantizeLinear"], "DequantizeLinear": counts["DequantizeLinear"]}


def _mha_nodes(model: onnx.ModelProto) -> set[str]:
    try:
        import onnx_graphsurgeon as gs
        from modelopt.onnx.quantization.graph_utils import find_mha_partitions

        graph = gs.import_onnx(model)
        return {p[i].name for p in find_mha_partitions(graph) for i in (0, 2)}
    except Exception:  # best effort: only used to label exclusions
        return set()


def _check_quantize_args(
    src: Path, feeds: Sequence[dict[str, np.ndarray]], method: str, percentile: float, high_precision_dtype: str
) -> None:
    """Reject bad arguments before anything is staged or written (typed errors, no ModelOpt traceback)."""
    if method not in METHODS:
        raise ConfigError(f"unknown calibration method {method!r}; choose from {list(METHODS)}.")
    if high_precision_dtype not in HIGH_PRECISION_DTYPES:
        raise ConfigError(f"high_precision_dtype must be one of {list(HIGH_PRECISION_DTYPES)}, got {high_precision_dtype!r}.")
    if not 0 < percentile <= 100:
        raise ConfigError(f"percentile must be in (0, 100], got {percentile}.")
    if not feeds:
        raise CalibrationError(f"no calibration feeds for {src}.", hint="check the calibration split.")
    if not src.is_file():
        raise OnnxModelError(f"{src} not found.", path=src, hint="run `autoglm-trt export` first.")


def _run_modelopt(
    src: Path,
    staged: Path,
    out: Path,
    feeds: Sequence[dict[str, np.ndarray]],
    cache: Path,
    *,
    method: str,
    op_types_to_quantize: Sequence[str],
    op_types_to_exclude: Sequence[str],
    nodes_to_exclude: Sequence[str],
    disable_mha_qdq: bool,
    high_precision_dtype: str,
    external: bool,
    log: io.StringIO | None,
) -> None:
    """ModelOpt ONNX PTQ of ``staged`` into ``out`` with our ranges as its calibration cache.

    ``feeds`` is the single feed ModelOpt still runs (GEMV detection; ORT's calibrator, whose ranges
    the cache then replaces).
    Any ModelOpt failure becomes an :class:`OnnxModelError` naming ``src`` with the last log lines.
    """
    from modelopt.onnx.quantization import quantize

    from trt_pipeline.graph.autocast import quiet_modelopt

    with quiet_modelopt(log) as buffer:
        try:
            quantize(
                str(staged),
                quantize_mode="int8",
                calibration_data_reader=feed_list_reader(feeds),
                calibration_method="entropy" if method == "entropy" else "max",
                calibration_cache_path=str(cache),
                calibration_eps=["cpu"],
                op_types_to_quantize=list(op_types_to_quantize),
                op_types_to_exclude=list(op_types_to_exclude) or None,
                nodes_to_exclude=list(nodes_to_exclude),
                disable_mha_qdq=disable_mha_qdq,
                high_precision_dtype=high_precision_dtype,
                use_external_data_format=external,
                output_path=str(out),
                log_level="INFO",
            )
        except Exception as error:  # ModelOpt raises assorted ValueError/RuntimeError/AssertionError
            tail = "\n".join(buffer.getvalue().splitlines()[-5:])
            raise OnnxModelError(
                f"ModelOpt INT8 quantization failed on {src}: {type(error).__name__}: {error}",
                path=src, hint=f"last ModelOpt log lines:\n{tail}" if tail else None,
            ) from error
    if not out.is_file():
        raise OnnxModelError(f"ModelOpt wrote no quantized model for {src}.", path=src)


def _exclusion_reasons(
    model: onnx.ModelProto,
    candidates: Sequence[onnx.NodeProto],
    quantized: Sequence[str],
    op_types_to_exclude: Sequence[str],
    nodes_to_exclude: Sequence[str],
    disable_mha_qdq: bool,
) -> dict[str, str]:
    """Why each candidate node of ``model`` was left unquantized (node name -> reason), for the report."""
    mha = _mha_nodes(model)
    excluded = {}
    for node in candidates:
        if node.name in quantized:
            continue
        if any(re.match(p, node.name) for p in nodes_to_exclude):
            excluded[node.name] = "excluded by nodes_to_exclude"
        elif node.op_type in op_types_to_exclude:
            excluded[node.name] = f"op type {node.op_type} excluded"
        elif node.name in mha:
            excluded[node.name] = "attention BMM (MHA pattern; disable_mha_qdq)" if disable_mha_qdq else \
                "attention BMM left unquantized by ModelOpt"
        else:
            excluded[node.name] = "left unquantized by ModelOpt (GEMV / K or N < 16 / no range)"
    return excluded


def _quantized_cache_scales(model: onnx.ModelProto, quantized: Sequence[str], ranged: dict[str, float]) -> dict[str, float]:
    """Scales (amax / 127) of the inputs and outputs of the quantized nodes (fp32 tensor names)."""
    producers = {n.name: n for n in model.graph.node}
    cache_scales = {}
    for name in quantized:
        node = producers.get(name)
        for tensor in (*(node.input if node else ()), *(node.output if node else ())):
            if tensor in ranged:
                cache_scales[tensor] = ranged[tensor] / 127.0
    return cache_scales


def exact_pattern(name: str) -> str:
    """A ModelOpt ``nodes_to_exclude`` pattern matching exactly ``name`` (it applies ``re.match``)."""
    return re.escape(name) + "$"


def quantize_int8_file(
    src: Path | str,
    dst: Path | str,
    feeds: Sequence[dict[str, np.ndarray]],
    *,
    method: str = "entropy",
    percentile: float = 99.99,
    op_types_to_quantize: Sequence[str] = DEFAULT_OP_TYPES,
    op_types_to_exclude: Sequence[str] = (),
    nodes_to_exclude: Sequence[str] = (),
    disable_mha_qdq: bool = True,
    high_precision_dtype: str = "fp16",
    external_data: bool | None = None,
    log: io.StringIO | None = None,
    calibration: Int8Calibration | None = None,
) -> Int8Report:
    """Quantize ``src`` (fp32 ONNX) into ``dst`` with explicit Q/DQ; calibration on CPU.

    Args:
        feeds: calibration inputs (ONNX input name -> numpy), e.g. ``CalibrationReader.feeds(c)``;
            the first one must be representative of the GEMM shapes (a prefill).
        method: ``entropy`` | ``max`` | ``percentile`` (activation range per tensor).
        percentile: the percentile of |x| used by ``percentile``.
        op_types_to_quantize: candidate op types (W8A8 on MatMul/Gemm by default).
        op_types_to_exclude / nodes_to_exclude: op types / node-name regexes left unquantized
            (:func:`exact_pattern` for exact names).
        disable_mha_qdq: leave attention BMMs (Q·K^T, P·V) unquantized.
        high_precision_dtype: ``fp16`` (TensorRT strongly typed deployment) or ``fp32``.
        calibration: ranges of ``src`` from :func:`calibrate_int8` (reused, ``feeds`` then unused
            but for ModelOpt's first feed); None calibrates here.

    Returns an :class:`Int8Report`; ``report.cache_scales`` maps fp32 tensor names to the
    scales of the quantized nodes' inputs and outputs (for :func:`write_calibration_cache`).
    """
    from trt_pipeline.graph.autocast import has_external_data

    src, dst = Path(src), Path(dst)
    _check_quantize_args(src, feeds, method, percentile, high_precision_dtype)
    start = time.perf_counter()
    reused = calibration is not None
    calibration = _calibration_for(src, feeds, calibration, method, percentile, op_types_to_quantize)
    model = onnx.load(str(src), load_external_data=False)
    candidates = candidate_nodes(model, op_types_to_quantize)
    ranged = calibration.ranged
    dst.parent.mkdir(parents=True, exist_ok=True)
    external = has_external_data(src) if external_data is None else external_data
    modelopt_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=".int8.", dir=dst.parent) as scratch:
        scratch_dir = Path(scratch)
        staged = stage_model(src, scratch_dir / "src")
        cache = write_calibration_cache(scratch_dir / "ranges.cache", {k: v / 127.0 for k, v in ranged.items()})
        out = scratch_dir / "out" / dst.name
        out.parent.mkdir()
        _run_modelopt(
            src, staged, out, [calibration.first_feed], cache, method=method,
            op_types_to_quantize=op_types_to_quantize, op_types_to_exclude=op_types_to_exclude,
            nodes_to_exclude=nodes_to_exclude, disable_mha_qdq=disable_mha_qdq,
            high_precision_dtype=high_precision_dtype, external=external, log=log,
        )
        quantized = onnx.load(str(out), load_external_data=False)
        _move_model(out, dst, external)
    names = quantized_nodes(quantized, op_types_to_quantize)
    return Int8Report(
        method=method,
        percentile=percentile if method == "percentile" else None,
        op_types_to_quantize=list(op_types_to_quantize),
        high_precision_dtype=high_precision_dtype,
        nodes_quantized=names,
        nodes_excluded=_exclusion_reasons(model, candidates, names, op_types_to_exclude, nodes_to_exclude,
                                          disable_mha_qdq),
        qdq_counts=qdq_counts(quantized),
        calibrated_tensors=len(ranged),
        calibration_feeds=calibration.feeds,
        cache_scales=_quantized_cache_scales(model, names, ranged),
        seconds=round(time.perf_counter() - start, 3),
        calibration_seconds=0.0 if reused else calibration.seconds,
        modelopt_seconds=round(time.perf_counter() - modelopt_start, 3),
    )


def _calibration_for(src: Path, feeds: Sequence[dict[str, np.ndarray]], calibration: Int8Calibration | None,
                     method: str, percentile: float, op_types: Sequence[str]) -> Int8Calibration:
    """``calibration`` when given (checked to match the options), else the one pass over ``feeds``."""
    if calibration is None:
        return calibrate_int8(src, feeds, method=method, percentile=percentile, op_types_to_quantize=op_types)
    if calibration.method != method or tuple(op_types) != calibration.op_types:
        raise ConfigError(
            f"the calibration passed for {src} was made with method {calibration.method!r} over "
            f"{list(calibration.op_types)}, not {method!r} over {list(op_types)}.",
            hint="calibrate again with calibrate_int8(...) using the same options.",
        )
    return calibration


def _move_model(src: Path, dst: Path, external: bool) -> None:
    """Move a saved model (and its data file, renamed to ``dst.name + '.data'``) to ``dst``.

    On the way its RMSNorms get the ``Reciprocal`` spelling (:mod:`trt_pipeline.graph.half_norms`):
    ModelOpt's fp16 high-precision graph otherwise crashes plain ONNX Runtime sessions, as AutoCast's did.
    """
    from trt_pipeline.graph.autocast import has_external_data, save_model

    dst.parent.mkdir(parents=True, exist_ok=True)
    is_external = has_external_data(src)
    full = onnx.load(str(src))
    reciprocal_norms(full)
    save_model(full, dst, external=external or is_external)


def quantize_int8_model(
    model: onnx.ModelProto, feeds: Sequence[dict[str, np.ndarray]], **kwargs: Any
) -> tuple[onnx.ModelProto, Int8Report]:
    """ModelProto -> ModelProto form of :func:`quantize_int8_file` (in-memory models < 2 GB)."""
    from trt_pipeline.graph.autocast import save_model

    with tempfile.TemporaryDirectory(prefix="int8-model.") as scratch:
        src, dst = Path(scratch) / "model.onnx", Path(scratch) / "model.int8.onnx"
        save_model(model, src, external=False)
        report = quantize_int8_file(src, dst, feeds, external_data=False, **kwargs)
        return onnx.load(str(dst)), report


__all__ = [
    "METHODS",
    "Int8Calibration",
    "Int8Report",
    "calibrate_int8",
    "exact_pattern",
    "collect_amax",
    "feed_list_reader",
    "hex_to_scale",
    "qdq_counts",
    "quantize_int8_file",
    "quantize_int8_model",
    "quantized_nodes",
    "read_calibration_cache",
    "scale_to_hex",
    "trt_version_number",
    "write_calibration_cache",
]
