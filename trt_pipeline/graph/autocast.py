"""FP16 by ModelOpt AutoCast: an fp32 ONNX graph -> a mixed fp16/fp32 ONNX graph.

TensorRT 11 builds strongly typed networks (no ``BuilderFlag.FP16``), so an FP16 engine needs an
ONNX graph whose tensors already are float16. :func:`autocast_file` wraps
``modelopt.onnx.autocast.convert_to_mixed_precision``:

* a **reference run** of the fp32 graph on ONNX Runtime (CPU) over the given calibration feeds
  records every tensor's range (aggregated over all feeds). By default it is the bounded-memory
  :mod:`~trt_pipeline.graph.reference_ranges` runner (ranges reduced inside the graph, one feed at
  a time; ModelOpt's own runner keeps every tensor of every feed: > 13 GB on the small preset's
  vision encoder); ``reference="modelopt"`` selects ModelOpt's (same statistics, for comparison);
* AutoCast's node classifier keeps in FP32 every node whose inputs/outputs exceed ``data_max``
  (fp16's ULP is 0.5 at 512) or whose initializers exceed ``init_max``, plus any node or op type
  excluded explicitly; all others run in FP16 with Cast nodes at the borders;
* ``keep_io_types=True`` keeps graph inputs/outputs float32 (the host loop feeds float32 and int64),
  ``False`` makes float I/O float16 (the runner then casts feeds to the graph's input dtypes).

The nodes kept in FP32 (and the rule that kept them) are captured from AutoCast's classifier and
returned in :class:`AutocastReport`, for the precision manifest.

:func:`autocast_file` is path based (models with external data / above 2 GB load through ModelOpt's
path API and are written back with external data); :func:`autocast_model` is the
ModelProto -> ModelProto form for in-memory models.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from trt_pipeline.errors import ConfigError, OnnxModelError
from trt_pipeline.graph.contrib_stand_ins import standard_stand_ins
from trt_pipeline.graph.half_norms import reciprocal_norms

TWO_GB = 2 * 1024**3
#: initializer bytes above which a graph is saved with external data (protobuf's 2 GB, with margin)
EXTERNAL_ABOVE_BYTES = TWO_GB - 64 * 1024**2
FP16_MAX = float(np.finfo(np.float16).max)
REFERENCE_RUNNERS = ("streaming", "modelopt")
_SKIP_RE = re.compile(r"Skipping node (?P<name>.+?): (?P<reason>.+)$")


@dataclass
class AutocastReport:
    """What AutoCast did to one graph."""

    nodes: int
    nodes_fp16: int
    nodes_kept_fp32: list[str]
    kept_fp32_reasons: dict[str, str] = field(default_factory=dict)
    kept_fp32_by_op_type: dict[str, int] = field(default_factory=dict)
    initializers_fp16: int = 0
    initializers_fp32: int = 0
    reference_feeds: int = 0
    reference_runner: str = "streaming"
    reference_tensors: int = 0
    reference_kept_bytes: int = 0
    keep_io_types: bool = True
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@contextlib.contextmanager
def quiet_modelopt(buffer: io.StringIO | None = None) -> Iterator[io.StringIO]:
    """Route ModelOpt's log handlers, prints and progress bars into a buffer (clean stdout/stderr).

    ModelOpt configures ``modelopt.onnx`` loggers with stdout handlers at import time and again
    inside ``quantize``; the handlers (and the root logger's) are swapped for one writing to
    ``buffer`` and sys.stdout/sys.stderr are redirected while ModelOpt runs (ONNX Runtime's
    calibrators print and draw tqdm bars). Everything is restored afterwards; the buffer's tail
    goes into error messages.
    """
    import modelopt.onnx  # noqa: F401  (configures its loggers)
    from modelopt.onnx.autocast import logging_config as _autocast_logging  # noqa: F401

    buffer = buffer if buffer is not None else io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    saved = []
    # ModelOpt re-adds a stdout handler and sets propagate=True inside quantize(); the root logger
    # (given a stderr handler by the first bare logging.warning of any library) is swapped too.
    for name in ("modelopt.onnx", "modelopt.onnx.autocast", None):
        logger = logging.getLogger(name)
        saved.append((logger, list(logger.handlers), logger.level, logger.propagate))
        for h in list(logger.handlers):
            logger.removeHandler(h)
        logger.addHandler(handler)
        logger.propagate = name is None
    try:
        with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
            yield buffer
    finally:
        for logger, handlers, level, propagate in saved:
            for h in list(logger.handlers):
                logger.removeHandler(h)
            for h in handlers:
                logger.addHandler(h)
            logger.setLevel(level)
            logger.propagate = propagate


@contextlib.contextmanager
def _capture_classification() -> Iterator[dict[str, list[str]]]:
    """Record AutoCast's (low, high) precision node lists from ``NodeClassifier.run``."""
    from modelopt.onnx.autocast import nodeclassifier

    original = nodeclassifier.NodeClassifier.run
    captured: dict[str, list[str]] = {"low": [], "high": []}

    def run(self: Any, ref_outputs_dict: Any = None) -> Any:
        low, high = original(self, ref_outputs_dict)
        captured["low"], captured["high"] = list(low), list(high)
        return low, high

    nodeclassifier.NodeClassifier.run = run  # type: ignore[method-assign]
    try:
        yield captured
    finally:
        nodeclassifier.NodeClassifier.run = original  # type: ignore[method-assign]


def stores_external_data(model: onnx.ModelProto) -> bool:
    """Whether any initializer of ``model`` keeps its bytes in an external data file."""
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)


def external_data_files(model: onnx.ModelProto) -> set[str]:
    """The external data files ``model``'s initializers name (locations relative to the model's folder)."""
    return {entry.value for tensor in model.graph.initializer if tensor.data_location == onnx.TensorProto.EXTERNAL
            for entry in tensor.external_data if entry.key == "location"}


def has_external_data(path: Path) -> bool:
    return stores_external_data(onnx.load(str(path), load_external_data=False))


def save_model(model: onnx.ModelProto, path: Path, external: bool | None = None) -> str | None:
    """Save ``model`` to ``path``; external data (``path.name + '.data'``) when asked or > 2 GB.

    Returns the external data file name or None.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if external is None:
        external = sum(_tensor_bytes(t) for t in model.graph.initializer) > EXTERNAL_ABOVE_BYTES
    data = path.with_name(path.name + ".data")
    if data.exists():
        data.unlink()
    if external:
        onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=data.name, size_threshold=1024)
    else:
        onnx.save(model, str(path))
    restore_shapes(path)
    return data.name if external else None


def restore_shapes(path: Path) -> None:
    """Re-infer every tensor's shape in ``path`` with ONNX data propagation (in place, external data untouched).

    ModelOpt's passes write graphs without the intermediate shapes the export carried. A fused decoder
    (``--decoder-ops fused``) needs them: its biased projections come out of onnxsim as Gemm + Reshape to a
    Concat-computed shape, plain shape inference leaves that shape unknown, ONNX's Attention inference then
    gives its output an empty last axis, and ONNX Runtime refuses the next MatMul at load. With data
    propagation the Concat's values, hence every shape, are known again.
    """
    try:
        onnx.shape_inference.infer_shapes_path(str(path), str(path), data_prop=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError):
        pass  # ONNX Runtime infers what it can at load; the caller's own checks judge the graph


def _tensor_bytes(tensor: onnx.TensorProto) -> int:
    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        return next((int(e.value) for e in tensor.external_data if e.key == "length"), 0)
    return len(tensor.raw_data) or tensor.ByteSize()


def write_reference_feeds(feeds: Sequence[dict[str, np.ndarray]], folder: Path) -> str:
    """Save feeds as a folder of one ``.npz`` per feed (AutoCast's multi-batch reference input format).

    One file per feed (rather than one Polygraphy JSON holding every feed as base64 text) lets the
    reference run load a single feed at a time.
    """
    path = Path(folder) / "reference_feeds"
    path.mkdir(parents=True, exist_ok=True)
    for index, feed in enumerate(feeds):
        np.savez(path / f"feed_{index:05d}.npz", **{name: np.asarray(value) for name, value in feed.items()})
    return str(path)


def autocast_file(
    src: Path | str,
    dst: Path | str,
    feeds: Sequence[dict[str, np.ndarray]] | None,
    *,
    keep_io_types: bool = True,
    low_precision_type: str = "fp16",
    data_max: float = 512.0,
    init_max: float = FP16_MAX,
    op_types_to_exclude: Sequence[str] = (),
    nodes_to_exclude: Sequence[str] = (),
    external_data: bool | None = None,
    log: io.StringIO | None = None,
    reference: str = "streaming",
) -> AutocastReport:
    """AutoCast ``src`` (fp32 ONNX, path API: external data supported) into ``dst``.

    Args:
        feeds: reference inputs (ONNX input name -> numpy array) run through the fp32 graph on
            ONNX Runtime CPU; None = ModelOpt's random inputs (not recommended).
        keep_io_types: keep float32 graph inputs/outputs.
        data_max / init_max: AutoCast's range thresholds (nodes beyond them stay FP32).
        op_types_to_exclude / nodes_to_exclude: op types / node-name regexes forced to FP32.
        external_data: force external data for ``dst``; None = as ``src`` (or automatic > 2 GB).
        reference: ``streaming`` (bounded memory, :mod:`~trt_pipeline.graph.reference_ranges`) or
            ``modelopt`` (ModelOpt's ReferenceRunner: memory grows with feeds x all tensors).
    """
    from modelopt.onnx.autocast import convert_to_mixed_precision

    from trt_pipeline.graph.reference_ranges import ReferenceRunStats, streaming_reference_runner

    src, dst = Path(src), Path(dst)
    if reference not in REFERENCE_RUNNERS:
        raise ConfigError(f"AutoCast reference runner {reference!r} unknown.", hint=f"use one of {REFERENCE_RUNNERS}.")
    if not src.is_file():
        raise OnnxModelError(f"{src} not found.", path=src, hint="run `autoglm-trt export` first.")
    start = time.perf_counter()
    external = has_external_data(src) if external_data is None else external_data
    runner = streaming_reference_runner() if reference == "streaming" else contextlib.nullcontext(ReferenceRunStats())
    with tempfile.TemporaryDirectory(prefix="autocast.") as scratch, quiet_modelopt(log) as buffer, \
            _capture_classification() as classes, runner as reference_run, standard_stand_ins(src) as (readable, restore):
        reference_path = write_reference_feeds(feeds, Path(scratch)) if feeds else None
        try:
            model = convert_to_mixed_precision(
                onnx_path=str(readable),
                low_precision_type=low_precision_type,
                nodes_to_exclude=list(nodes_to_exclude),
                op_types_to_exclude=list(op_types_to_exclude),
                data_max=data_max,
                init_max=init_max,
                keep_io_types=keep_io_types,
                calibration_data=reference_path,
                providers=["cpu"],
            )
        except Exception as error:  # ModelOpt raises assorted ValueError/RuntimeError/AssertionError
            tail = "\n".join(buffer.getvalue().splitlines()[-5:])
            raise OnnxModelError(
                f"ModelOpt AutoCast failed on {src}: {type(error).__name__}: {error}",
                path=src,
                hint=f"last ModelOpt log lines:\n{tail}" if tail else "re-run with a smaller --calib-samples to debug.",
            ) from error
        model = restore(model)  # ONNX Runtime's contrib attention again, where the graph had it
    external = external or sum(_tensor_bytes(t) for t in model.graph.initializer) > EXTERNAL_ABOVE_BYTES
    reciprocal_norms(model)  # plain ONNX Runtime sessions load it (graph/half_norms.py)
    save_model(model, dst, external)
    report = summarize(model, classes, buffer.getvalue())
    report.reference_feeds = len(feeds or [])
    report.reference_runner = reference
    report.reference_tensors = reference_run.tensors
    report.reference_kept_bytes = reference_run.kept_bytes
    report.keep_io_types = keep_io_types
    report.seconds = round(time.perf_counter() - start, 3)
    return report


def autocast_model(
    model: onnx.ModelProto, feeds: Sequence[dict[str, np.ndarray]] | None, **kwargs: Any
) -> tuple[onnx.ModelProto, AutocastReport]:
    """ModelProto -> ModelProto form of :func:`autocast_file` (for in-memory models < 2 GB)."""
    with tempfile.TemporaryDirectory(prefix="autocast-model.") as scratch:
        src, dst = Path(scratch) / "model.onnx", Path(scratch) / "model.fp16.onnx"
        save_model(model, src, external=False)
        report = autocast_file(src, dst, feeds, external_data=False, **kwargs)
        return onnx.load(str(dst)), report


def summarize(model: onnx.ModelProto, classes: dict[str, list[str]], log_text: str) -> AutocastReport:
    """Node/initializer counts of a converted model plus AutoCast's fp32 decisions and reasons."""
    high = list(classes.get("high", []))
    low = list(classes.get("low", []))
    names = {node.name: node.op_type for node in model.graph.node}
    reasons: dict[str, str] = {}
    for line in log_text.splitlines():
        match = _SKIP_RE.search(line)
        if match and match.group("name") in high:
            reasons.setdefault(match.group("name"), match.group("reason").strip())
    by_type = Counter(names.get(n, "?") for n in high)
    fp16 = sum(1 for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16)
    fp32 = sum(1 for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT)
    return AutocastReport(
        nodes=len(low) + len(high),
        nodes_fp16=len(low),
        nodes_kept_fp32=high,
        kept_fp32_reasons=reasons,
        kept_fp32_by_op_type=dict(sorted(by_type.items())),
        initializers_fp16=fp16,
        initializers_fp32=fp32,
    )


def io_dtypes(path: Path | str) -> dict[str, list[dict[str, Any]]]:
    """Graph inputs/outputs of an ONNX file: name, numpy dtype name and symbolic shape."""
    model = onnx.load(str(path), load_external_data=False)

    def describe(values: Any) -> list[dict[str, Any]]:
        out = []
        for value in values:
            tensor = value.type.tensor_type
            dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
            shape = [d.dim_param or d.dim_value for d in tensor.shape.dim]
            out.append({"name": value.name, "dtype": dtype, "shape": shape})
        return out

    return {"inputs": describe(model.graph.input), "outputs": describe(model.graph.output)}


__all__ = [
    "EXTERNAL_ABOVE_BYTES",
    "AutocastReport",
    "autocast_file",
    "autocast_model",
    "external_data_files",
    "has_external_data",
    "io_dtypes",
    "quiet_modelopt",
    "save_model",
    "stores_external_data",
]
