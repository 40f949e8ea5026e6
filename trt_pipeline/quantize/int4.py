"""INT4 weight-only quantization (AWQ / RTN) by ModelOpt ONNX: an fp32 graph -> block-quantized INT4 weights.

What LLM decoders ship on Jetson and phones is weight-only INT4 (TensorRT Edge-LLM, TensorRT-LLM,
onnxruntime-genai): a decode step is memory-bound, so storing the linear weights in 4 bits cuts the
bytes read per token by ~4x against fp16 while the activations stay in floating point.
:func:`quantize_int4_file` does it in ONNX, on a CPU:

1. **Opset.** Block quantization is ``DequantizeLinear(block_size=B, axis=0)`` with an int4 weight
   and one scale per block of ``B`` rows (opset 21). A graph below the requested opset (>= 21) is
   upgraded with ``onnx.version_converter`` and checked to give the same outputs as the original on
   one calibration feed; if the converter fails (or changes the outputs) the export is refused,
   naming its opset and ``autoglm-trt export --opset 21``.
2. **Block size.** One size for every quantized MatMul: a power of two >= 16 (ONNX Runtime's
   ``MatMulNBits`` needs that) dividing every quantized weight's reduction dim ``K``. By default
   :func:`auto_block_size`: the field's 128 (the real 9B: 32 blocks per 4096-row column), smaller only
   when the narrowest quantized ``K`` would get fewer than 8 blocks per column (the 128-wide fixtures:
   16). A given size that does not divide some ``K`` (the tiny preset's 64-wide vision tower vs 128)
   is refused with the matrix, its ``K`` and the largest size that fits them all.
3. **Weights.** ModelOpt ``modelopt.onnx.quantization.int4.quantize`` on the fp32 graph:
   ``awq`` = ModelOpt ``awq_full``, the AWQ paper's two searches: activation-aware per-channel
   scales on the calibration activations (folded into the preceding op or a ``Mul``), then the
   weight-clipping ratio per block; ``awq-lite`` = the scale search alone, ``awq-clip`` = the
   clipping search alone, ``rtn`` = round to nearest. On the trained fixture (block 16, 28 held-out
   prompts, 32 tokens) ``awq`` gives the best teacher-forced agreement of the four (97.9 %) and, with
   ``awq-clip``, the best worst-feed logits cosine (0.995). AWQ concatenates the calibration activations of
   all feeds, so it gets equal-length prefill feeds (:func:`awq_feeds`: the common length that keeps
   the most tokens). If an AWQ method cannot run (no such feed, or ModelOpt's AWQ raises), the stage falls
   back to RTN, logs why and records ``fallback_reason`` in the report; never silently.
   RTN needs no activations, so it runs one weight at a time (:mod:`~trt_pipeline.quantize.int4_rtn`:
   ModelOpt's RTN per weight, the graph read and written one tensor at a time; byte for byte the
   whole-graph result) and never holds the fp32 graph: the real 9B's int4 is made on a machine that
   cannot hold its 41 GB. AWQ runs ModelOpt on the whole graph and is refused up front
   (:func:`check_whole_graph_memory`) where the graph's weights exceed the memory available.
   The LM head stays in floating point unless asked (the AWQ recipe's default: it sets the logits
   every greedy step compares).
4. **Activations.** ``fp16`` (default, TensorRT): the non-quantized part is AutoCast to fp16 as
   the fp16 variant is (float32 graph I/O), the int4 scales become fp16, so a strongly typed engine
   runs fp16 GEMMs on int4 weights. ``fp32``: ONNX Runtime on CPUs, whose ``DQMatMulToMatMulNBits``
   fusion turns each ``DequantizeLinear(int4) -> MatMul`` into ``com.microsoft.MatMulNBits`` only
   for float32 MatMuls on the CPU provider (fp16 MatMuls there get Casts inserted and stay unfused);
   :func:`ort_fused_matmuls` checks it.

The output graph holds only standard ONNX ops (DequantizeLinear, MatMul, Mul, Cast...): TensorRT
parses it; ``MatMulNBits`` exists only inside ONNX Runtime's optimized session.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from trt_pipeline.config.int4 import INT4_FIELD_BLOCK_SIZE as FIELD_BLOCK_SIZE
from trt_pipeline.config.int4 import INT4_MIN_BLOCK_SIZE as MIN_BLOCK_SIZE
from trt_pipeline.config.int4 import INT4_MIN_BLOCKS_PER_COLUMN as MIN_BLOCKS_PER_COLUMN
from trt_pipeline.config.int4 import INT4_MIN_OPSET as MIN_OPSET
from trt_pipeline.config.int4 import check_block_size, check_opset
from trt_pipeline.errors import CalibrationError, ConfigError, OnnxModelError
from trt_pipeline.graph.autocast import stores_external_data
from trt_pipeline.progress import log as log_line
from trt_pipeline.quantize.int8 import feed_list_reader, stage_model
from trt_pipeline.quantize.memory_needs import memory_shortfall

#: a progress hook: (weights done, weights in all)
OnWeight = Callable[[int, int], None]
#: ``--method`` -> ModelOpt ``calibration_method``.
METHODS: dict[str, str] = {"awq": "awq_full", "awq-lite": "awq_lite", "awq-clip": "awq_clip", "rtn": "rtn_dq"}
ACTIVATIONS = ("fp16", "fp32")
#: Export dims that are a prefill feed's sequence axis (total = sequence there: nothing cached).
SEQUENCE_DIMS = ("sequence_length", "total_sequence_length")


# --- checks ---------------------------------------------------------------------------------
def opset_of(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


@dataclass(frozen=True)
class WeightMatMul:
    """A MatMul (or Gemm) whose second input is a 2-D weight initializer, reduction dim K (an INT4 candidate)."""

    name: str
    weight: str
    k: int
    n: int
    op_type: str = "MatMul"


def weight_matmuls(model: onnx.ModelProto) -> list[WeightMatMul]:
    """The GEMMs ModelOpt can quantize: activation x 2-D initializer (same rule as ModelOpt's search)."""
    inits = {t.name: t for t in model.graph.initializer}
    found = []
    for node in model.graph.node:
        if node.op_type not in ("MatMul", "Gemm") or node.input[0] in inits or node.input[1] not in inits:
            continue
        dims = list(inits[node.input[1]].dims)
        trans_b = any(a.name == "transB" and a.i for a in node.attribute)
        if len(dims) == 2:
            k, n = (dims[1], dims[0]) if trans_b else (dims[0], dims[1])
            found.append(WeightMatMul(node.name, node.input[1], k, n, node.op_type))
    return found


def lm_head_names(model: onnx.ModelProto, matmuls: Sequence[WeightMatMul]) -> list[str]:
    """The MatMul(s) producing the vocabulary logits: weight N equal to the ``logits`` output's last dim."""
    logits = next((o for o in model.graph.output if o.name == "logits"), None)
    if logits is None:
        return []
    last = logits.type.tensor_type.shape.dim[-1]
    return [m.name for m in matmuls if last.HasField("dim_value") and m.n == last.dim_value]


def auto_block_size(matmuls: Sequence[WeightMatMul]) -> int:
    """The block size for ``matmuls`` when none is given: 128 unless a column would get fewer than 8 blocks.

    128 rows per scale is the field's INT4 setting for 4096-wide layers (32 scales per column of the
    real 9B, whose smallest K is 4096). On a narrow model the same 128 rows can be a whole column
    (the trained fixture's K = 128: one scale per column, per-channel quantization), which is what
    costs accuracy there (measured, ``benchmarks/results/int4_trained.json``: AWQ at 128 leaves a held-out
    logits cosine of 0.990, at 16 0.995, teacher-forced agreement 96.3 % vs 97.9 %). So: the largest
    power of two in [16, 128] leaving at least :data:`MIN_BLOCKS_PER_COLUMN` blocks in the narrowest
    quantized K and dividing every K (9B: 128; small preset, K 768: 64; tiny / trained, K 128: 16).
    """
    if not matmuls:
        return FIELD_BLOCK_SIZE
    narrowest = min(m.k for m in matmuls)
    block = FIELD_BLOCK_SIZE
    while block > MIN_BLOCK_SIZE and (narrowest < MIN_BLOCKS_PER_COLUMN * block or any(m.k % block for m in matmuls)):
        block //= 2
    return block


def check_block_fits(matmuls: Sequence[WeightMatMul], block_size: int, path: Path) -> None:
    """Every quantized weight's K must be a multiple of the block size; else name the matrix and a size that fits."""
    bad = [m for m in matmuls if m.k % block_size]
    if not bad:
        return
    fits = [b for b in (1024, 512, 256, 128, 64, 32, 16) if all(m.k % b == 0 for m in matmuls)]
    first = bad[0]
    hint = (f"pass --block-size {fits[0]} (the largest power of two >= {MIN_BLOCK_SIZE} dividing every K)"
            if fits else "no power-of-two block size >= 16 divides every K; keep this component in fp16 or leave "
                         "the matrices whose K does not fit in floating point (--exclude-nodes REGEX)")
    raise ConfigError(
        f"--block-size {block_size} does not divide the reduction dim K={first.k} of MatMul {first.name!r} "
        f"(weight {first.weight} [{first.k}, {first.n}]) in {path}"
        + (f", nor {len(bad) - 1} other matrices" if len(bad) > 1 else "") + ".",
        path=path, hint=hint)


# --- opset upgrade --------------------------------------------------------------------------
def gemms_to_matmuls(model: onnx.ModelProto, names: Sequence[str], transpose_nodes: bool = False) -> int:
    """Rewrite the Gemms ``names`` (2-D weight, alpha = beta = 1, no transA) as MatMul (+ Add of C).

    ONNX Runtime fuses ``DequantizeLinear(int4) -> MatMul`` into ``MatMulNBits`` but has no such
    fusion for Gemm; TensorRT parses both. A ``transB`` weight is stored transposed (``[K, N]``) so the
    block axis is 0 as for the MatMuls; with ``transpose_nodes`` (a graph whose weights are not loaded)
    it gets a ``Transpose`` node of the same output name instead, for
    :func:`~trt_pipeline.graph.weight_folding.fold_weight_transforms` to fold lazily. With a bias,
    the MatMul runs on ``Unsqueeze(A, 0)`` and is
    squeezed before the Add: ORT's ``MatMulAddFusion`` (basic level, before the QDQ fusions) turns a
    2-D MatMul + Add back into a Gemm, which then stays unfused (measured, ORT 1.24). Returns how
    many Gemms were rewritten.
    """
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    wanted, done, shift = set(names), 0, 0  # shift: nodes added before the current index
    for index, node in enumerate(list(model.graph.node)):
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if (node.op_type != "Gemm" or node.name not in wanted or attrs.get("transA", 0)
                or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0):
            continue
        weight, new = node.input[1], []
        if attrs.get("transB", 0):
            weight = f"{node.input[1]}_transposed_for_{node.name}"
            if transpose_nodes:
                new.append(onnx.helper.make_node("Transpose", [node.input[1]], [weight], name=f"{weight}_node",
                                                 perm=[1, 0]))
            else:
                transposed = numpy_helper.to_array(inits[node.input[1]]).T.copy()
                model.graph.initializer.append(numpy_helper.from_array(transposed, weight))
        new += _matmul_nodes(model, node, weight)
        model.graph.node.remove(node)
        for offset, made in enumerate(new):
            model.graph.node.insert(index + shift + offset, made)
        shift += len(new) - 1
        done += 1
    return done


def _matmul_nodes(model: onnx.ModelProto, gemm: onnx.NodeProto, weight: str) -> list[onnx.NodeProto]:
    """MatMul(A, weight) for ``gemm``; with a bias C: Unsqueeze -> MatMul -> Squeeze -> Add(C)."""
    from onnx import numpy_helper

    make, out = onnx.helper.make_node, gemm.output[0]
    if len(gemm.input) < 3 or not gemm.input[2]:
        return [make("MatMul", [gemm.input[0], weight], [out], name=gemm.name)]
    axes = "int4_gemm_rewrite_axis0"
    if axes not in {t.name for t in model.graph.initializer}:
        model.graph.initializer.append(numpy_helper.from_array(np.array([0], np.int64), axes))
    return [make("Unsqueeze", [gemm.input[0], axes], [f"{out}_a3d"], name=f"{gemm.name}_unsqueeze"),
            make("MatMul", [f"{out}_a3d", weight], [f"{out}_p3d"], name=gemm.name),
            make("Squeeze", [f"{out}_p3d", axes], [f"{out}_p"], name=f"{gemm.name}_squeeze"),
            make("Add", [f"{out}_p", gemm.input[2]], [out], name=f"{gemm.name}_bias")]


def upgrade_hint(opset: int, current: int) -> str:
    return (f"re-export with `autoglm-trt export CHECKPOINT --out OUT --opset {opset}` (the export is opset "
            f"{current}; INT4 needs DequantizeLinear with block_size, opset >= {MIN_OPSET}).")


def upgraded(model: onnx.ModelProto, src: Path, opset: int) -> onnx.ModelProto:
    """``model`` (``src``'s graph, its external weights loaded or not) at ``opset``, by onnx's version converter.

    Raises OnnxModelError naming the file's opset and the export flag when the converter fails."""
    current = opset_of(model)
    if current >= opset:
        return model
    try:
        return onnx.version_converter.convert_version(model, opset)
    except Exception as error:  # the converter raises assorted RuntimeError/ValidationError
        raise OnnxModelError(f"{src} is opset {current} and onnx cannot upgrade it to opset {opset}: {error}",
                             path=src, hint=upgrade_hint(opset, current)) from error


def prepare_graph(src: Path, dst: Path, opset: int, feed: dict[str, np.ndarray] | None,
                  gemms: Sequence[str] = ()) -> int:
    """Write ``src`` at ``opset`` with ``gemms`` as MatMuls to ``dst`` (checked equal on ``feed``).

    Returns ``src``'s opset. Raises OnnxModelError naming the file's opset and the export flag when
    the converter fails or the rewritten graph computes something else.
    """
    from trt_pipeline.graph.autocast import has_external_data, save_model

    model = onnx.load(str(src))
    current = opset_of(model)
    model = upgraded(model, src, opset)
    changed = gemms_to_matmuls(model, gemms) > 0 or current < opset
    save_model(model, dst, has_external_data(src))
    if changed and feed is not None:
        _check_same_outputs(src, dst, feed, upgrade_hint(opset, current))
    return current


def prepare_structure(src: Path, scratch: Path, opset: int, feed: dict[str, np.ndarray] | None,
                      gemms: Sequence[str] = ()) -> tuple[onnx.ModelProto, int]:
    """:func:`prepare_graph` without loading the external weights: (``src``'s graph at ``opset``, its opset).

    The graph keeps its initializers as ``src`` stores them; a ``transB`` Gemm's weight gets a Transpose
    node. The rewritten graph is checked against ``src`` on ``feed`` when its weights are inside it
    (below 2 GB); a graph with external data is not run twice in memory (the 9B's: 41 GB each), the
    precision stage's accuracy gates compare the quantized graph with fp32 instead.
    """
    structure = onnx.load(str(src), load_external_data=False)
    current = opset_of(structure)
    structure = upgraded(structure, src, opset)
    changed = gemms_to_matmuls(structure, gemms, transpose_nodes=True) > 0 or current < opset
    external = stores_external_data(structure)
    if changed and feed is not None and not external:
        checked = scratch / "opset" / src.name
        checked.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(structure, str(checked))
        _check_same_outputs(src, checked, feed, upgrade_hint(opset, current))
    return structure, current


def _check_same_outputs(src: Path, dst: Path, feed: dict[str, np.ndarray], hint: str) -> None:
    from trt_pipeline.runtime.onnxruntime_runner import session

    before, after = session(src), session(dst)
    names = [o.name for o in before.get_outputs()]
    for name, a, b in zip(names, before.run(names, feed), after.run(names, feed)):
        scale = float(np.max(np.abs(a))) or 1.0
        if a.shape != b.shape or float(np.max(np.abs(a - b), initial=0.0)) > 1e-5 * scale:
            raise OnnxModelError(f"{src} upgraded to opset {opset_of(onnx.load(str(dst), load_external_data=False))} "
                                 f"computes another `{name}` than the original.", path=src, hint=hint)


# --- AWQ calibration feeds ------------------------------------------------------------------
def awq_feeds(feeds: Sequence[dict[str, np.ndarray]], inputs: Sequence[Any]) -> tuple[list[dict[str, np.ndarray]], int]:
    """Equal-length prefill feeds for AWQ (it concatenates every feed's activations), and that length.

    Prefill feeds (no past) are cut to the common length ``L`` that keeps the most tokens
    (``L x feeds at least L long``); a causal decoder's first ``L`` positions do not depend on the
    rest. Logits are asked for position ``L - 1`` only. Decode feeds (one token, a filled cache)
    are not used. Returns ``([], 0)`` when no prefill feed exists.
    """
    shapes = {spec.name: list(spec.shape) for spec in inputs}
    seq_input = next((n for n, s in shapes.items() if "sequence_length" in s), None)
    prefill = [f for f in feeds if seq_input in f and _no_past(f, shapes, seq_input)]
    if not prefill:
        return [], 0
    axis = shapes[seq_input].index("sequence_length")
    lengths = sorted({f[seq_input].shape[axis] for f in prefill})
    length = max(lengths, key=lambda n: (n * sum(f[seq_input].shape[axis] >= n for f in prefill), n))
    return [_crop(f, shapes, length) for f in prefill if f[seq_input].shape[axis] >= length], length


def _no_past(feed: dict[str, np.ndarray], shapes: dict[str, list[Any]], seq_input: str) -> bool:
    """Whether ``feed`` attends to nothing before its segment: ``total_sequence_length`` equals
    ``sequence_length``. Said without the cache's axes, which differ between the KV-cache layouts (an
    ``--kv-cache inplace`` cache has no ``past_sequence_length`` axis; its axis is the total one)."""
    total = next((n for n, s in shapes.items() if "total_sequence_length" in s and n in feed), None)
    if total is None:  # no input spans the whole context: nothing cached to tell apart
        return True
    length = feed[seq_input].shape[shapes[seq_input].index("sequence_length")]
    return feed[total].shape[shapes[total].index("total_sequence_length")] == length


def _crop(feed: dict[str, np.ndarray], shapes: dict[str, list[Any]], length: int) -> dict[str, np.ndarray]:
    out = {}
    for name, value in feed.items():
        dims = shapes.get(name, [])
        for axis, dim in enumerate(dims):
            if dim in SEQUENCE_DIMS:
                value = np.take(value, np.arange(length), axis=axis)
        if dims == ["num_logits"]:
            value = np.asarray([length - 1], dtype=value.dtype)
        out[name] = np.ascontiguousarray(value)
    return out


# --- quantization ---------------------------------------------------------------------------
@dataclass
class Int4Report:
    """What the INT4 stage did to one graph (the precision manifest's ``int4`` entry)."""

    method: str
    method_used: str
    modelopt_method: str
    block_size: int
    block_size_source: str  # "--block-size" or the auto_block_size rule
    activations: str
    opset_from: int
    opset: int
    fallback_reason: str | None = None
    nodes_quantized: list[str] = field(default_factory=list)
    nodes_excluded: dict[str, str] = field(default_factory=dict)  # name -> reason
    awq_calibration: dict[str, int] | None = None
    weight_bytes: dict[str, int] = field(default_factory=dict)
    ops: dict[str, int] = field(default_factory=dict)
    autocast: dict[str, Any] | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _HostArray(np.ndarray):
    """A numpy array answering cupy's ``.get()`` (device -> host copy) with itself."""

    def get(self) -> np.ndarray:
        return np.asarray(self)


class _NumpyAsCupy:
    """numpy, except that ``asarray`` returns :class:`_HostArray` (see :func:`_cpu_awq_fusion_fix`)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)

    @staticmethod
    def asarray(value: Any, *args: Any, **kwargs: Any) -> np.ndarray:
        return np.asarray(value, *args, **kwargs).view(_HostArray)


@contextlib.contextmanager
def _cpu_awq_fusion_fix() -> Iterator[None]:
    """Work around ModelOpt 0.47's AWQ-lite on CPU: folding the AWQ scales into a preceding
    Mul-with-weight (an RMSNorm's gain) calls cupy's ``.get()`` on a numpy array
    (``modelopt/onnx/quantization/int4.py``, ``numpy_helper.from_array(new_tensor.get(), ...)``), so
    AWQ-lite fails on every model whose norms have real weights when no CUDA device is present. While
    ModelOpt runs without cupy, its ``np`` module gets an ``asarray`` whose arrays answer ``.get()``."""
    import modelopt.onnx.quantization.int4 as modelopt_int4

    if modelopt_int4.has_cupy:
        yield
        return
    saved = modelopt_int4.np
    modelopt_int4.np = _NumpyAsCupy()
    try:
        yield
    finally:
        modelopt_int4.np = saved


def _modelopt_int4(staged: Path, method: str, feeds: Sequence[dict[str, np.ndarray]], block_size: int,
                   exclude: Sequence[str], external: bool, log: io.StringIO | None) -> onnx.ModelProto:
    """One ModelOpt INT4 run; ModelOpt's own exceptions propagate (the caller decides on a fallback)."""
    import re

    from modelopt.onnx.quantization.int4 import quantize

    from trt_pipeline.graph.autocast import quiet_modelopt

    with quiet_modelopt(log), _cpu_awq_fusion_fix():
        return quantize(
            str(staged), calibration_method=METHODS[method],
            calibration_data_reader=feed_list_reader(feeds) if feeds else None,
            calibration_eps=["cpu"], use_external_data_format=external, block_size=block_size,
            nodes_to_exclude=[f"{re.escape(name)}$" for name in exclude] or None, log_level="WARNING",
        )


def _quantize_weights(src: Path, staged: Path, method: str, feeds: Sequence[dict[str, np.ndarray]], inputs: Any,
                      block_size: int, exclude: Sequence[str], external: bool, log: io.StringIO | None,
                      ) -> tuple[onnx.ModelProto | None, str, str | None, dict[str, int] | None]:
    """(AWQ's model, method used, fallback reason, AWQ feed summary); no model when AWQ cannot run: the
    caller then quantizes by RTN (:func:`_rtn_file`), the reason logged and returned."""
    chosen, length = awq_feeds(feeds, inputs)
    awq = {"feeds": len(chosen), "tokens_per_feed": length, "feeds_given": len(feeds)}
    if chosen:
        try:
            return _modelopt_int4(staged, method, chosen, block_size, exclude, external, log), method, None, awq
        except Exception as error:  # ModelOpt's AWQ raises assorted ValueError/RuntimeError/LinAlgError
            reason = f"ModelOpt {METHODS[method]} failed: {type(error).__name__}: {error}"
    else:
        reason = "no prefill calibration feed (AWQ needs prompt activations)"
    log_line(f"int4 {src.name}: {method} not possible ({reason}); falling back to rtn (round to nearest)")
    return None, "rtn", reason, awq


def _rtn_file(src: Path, dst: Path, scratch: Path, targets: Sequence[WeightMatMul], block_size: int, opset: int,
              feed: dict[str, np.ndarray] | None, gemms: Sequence[str], on_weight: OnWeight | None = None) -> int:
    """RTN INT4 of the ``targets``' weights of ``src`` into ``dst``, one weight at a time
    (:mod:`~trt_pipeline.quantize.int4_rtn`); returns ``src``'s opset."""
    from trt_pipeline.quantize.int4_rtn import quantize_rtn_file

    structure, opset_from = prepare_structure(src, scratch, opset, feed, gemms)
    try:
        quantize_rtn_file(src, dst, [m.name for m in targets], block_size, structure, on_weight)
    except Exception as error:
        raise OnnxModelError(f"ModelOpt INT4 quantization failed on {src}: {type(error).__name__}: {error}",
                             path=src, hint="inspect the graph's MatMul weights; keep this component in fp16.") from error
    return opset_from


def weight_bytes(model: onnx.ModelProto) -> dict[str, int]:
    """Bytes of the initializers by element type (int4 counted as half a byte per element)."""
    sizes: Counter = Counter()
    for tensor in model.graph.initializer:
        count = int(np.prod(tensor.dims)) if tensor.dims else 1
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)
        name = onnx.TensorProto.DataType.Name(tensor.data_type).lower()
        bits = 4 if tensor.data_type in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4) else 8 * np.dtype(dtype).itemsize
        sizes[name] += (count * bits + 7) // 8
    return {**dict(sorted(sizes.items())), "total": int(sum(sizes.values()))}


def dq_matmuls(model: onnx.ModelProto) -> list[str]:
    """MatMuls whose weight comes from a block-quantized int4 DequantizeLinear."""
    inits = {t.name: t.data_type for t in model.graph.initializer}
    int4 = {onnx.TensorProto.INT4, onnx.TensorProto.UINT4}
    dq = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear" and inits.get(n.input[0]) in int4}
    return [n.name for n in model.graph.node if n.op_type in ("MatMul", "Gemm") and len(n.input) > 1 and n.input[1] in dq]


def _exclusions(model: onnx.ModelProto, matmuls: Sequence[WeightMatMul], quantize_lm_head: bool,
                nodes_to_exclude: Sequence[str]) -> dict[str, str]:
    """Candidate MatMuls left in floating point, with the reason (for the manifest)."""
    import re

    reasons = {}
    if not quantize_lm_head:
        reasons.update({name: "LM head kept in floating point (--quantize-lm-head to quantize it)"
                        for name in lm_head_names(model, matmuls)})
    for m in matmuls:
        if m.name not in reasons and any(re.match(p, m.name) for p in nodes_to_exclude):
            reasons[m.name] = "excluded by --exclude-nodes"
    return reasons


def _check_args(src: Path, feeds: Sequence[Any], method: str, activations: str, block_size: int | None,
                opset: int) -> None:
    if method not in METHODS:
        raise ConfigError(f"unknown --method {method!r}; choose from {', '.join(METHODS)}.")
    if activations not in ACTIVATIONS:
        raise ConfigError(f"unknown --activations {activations!r}; choose from {', '.join(ACTIVATIONS)}.")
    if block_size is not None:
        check_block_size(block_size)
    check_opset(opset)
    if not src.is_file():
        raise OnnxModelError(f"{src} not found.", path=src, hint="run `autoglm-trt export` first.")
    if not feeds and (method != "rtn" or activations == "fp16"):  # RTN to fp32 activations reads no activation
        raise CalibrationError(f"no calibration feeds for {src}.", hint="check the calibration split.")


def _targets(src: Path, scratch: Path, method: str, quantize_lm_head: bool, nodes_to_exclude: Sequence[str],
             ) -> tuple[Path, list[WeightMatMul], dict[str, str]]:
    """(the graph to quantize, its MatMuls to quantize, those left in floating point with why).

    A streamed export's weights reach their MatMuls through Transposes: RTN folds them as it writes the
    graph (their dataless structure is enough to find the MatMuls); ModelOpt's AWQ reads a folded copy."""
    from trt_pipeline.graph.weight_folding import folded_structure, folded_weights_file

    if method == "rtn":
        folded, model = src, folded_structure(onnx.load(str(src), load_external_data=False))
    else:
        folded = folded_weights_file(src, scratch / "folded")
        model = onnx.load(str(folded), load_external_data=False)
    matmuls = weight_matmuls(model)
    excluded = _exclusions(model, matmuls, quantize_lm_head, nodes_to_exclude)
    targets = [m for m in matmuls if m.name not in excluded]
    if not targets:
        raise ConfigError(f"{src} has no MatMul with a 2-D weight left to quantize ({len(matmuls)} candidates, "
                          f"{len(excluded)} excluded).", path=src)
    return folded, targets, excluded


def check_whole_graph_memory(src: Path, method: str) -> None:
    """AWQ runs ModelOpt on the whole fp32 graph: every weight loaded, then an ONNX Runtime session of it
    for the calibration activations. Refused up front when the weights alone exceed the memory this
    process has (the real 9B's 41 GB on a 24 GiB machine), instead of being killed an hour in;
    RTN quantizes one weight at a time and is never refused for size."""
    shortfall = memory_shortfall([src]) if method != "rtn" else None
    if shortfall is not None:
        size, available = shortfall
        raise ConfigError(
            f"--method {method} quantizes {src} as a whole: ModelOpt loads its {size / 1e9:.1f} GB and ONNX Runtime "
            f"a second copy to calibrate, more than the {available / 1e9:.1f} GB of memory available here.",
            path=src, hint="pass --method rtn (one weight at a time: it holds only the weight being written), "
                           f"or run on a machine with more than {2 * size / 1e9:.0f} GB of memory.")


def quantize_int4_file(
    src: Path | str,
    dst: Path | str,
    feeds: Sequence[dict[str, np.ndarray]],
    *,
    inputs: Sequence[Any] = (),
    method: str = "awq",
    block_size: int | None = None,
    activations: str = "fp16",
    quantize_lm_head: bool = False,
    nodes_to_exclude: Sequence[str] = (),
    opset: int = MIN_OPSET,
    log: io.StringIO | None = None,
    on_weight: OnWeight | None = None,
) -> Int4Report:
    """INT4 weight-only quantization of ``src`` (fp32 ONNX) into ``dst``; see the module docstring.

    Args:
        feeds: calibration feeds (``CalibrationReader.feeds(component)``): AWQ's activations, the
            opset upgrade's check and AutoCast's reference run.
        inputs: the component's input specs from export.json (their dim names find the sequence axis
            to cut AWQ's feeds to one length).
        method: ``awq`` | ``awq-lite`` | ``awq-clip`` | ``rtn``. activations: ``fp16`` (TensorRT) | ``fp32`` (ORT CPU).
        block_size: rows per scale; None: :func:`auto_block_size` of the quantized MatMuls.
        nodes_to_exclude: node-name regexes left in floating point.
        on_weight: called with (weights done, weights in all) as RTN quantizes them (a progress bar's hook).
    """
    from trt_pipeline.graph.autocast import autocast_file, has_external_data, save_model

    src, dst = Path(src), Path(dst)
    _check_args(src, feeds, method, activations, block_size, opset)
    check_whole_graph_memory(src, method)
    start = time.perf_counter()
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".int4.", dir=dst.parent) as scratch:
        folded, targets, excluded = _targets(src, Path(scratch), method, quantize_lm_head, nodes_to_exclude)
        source = "--block-size" if block_size is not None else (
            f"auto: largest power of two in [{MIN_BLOCK_SIZE}, {FIELD_BLOCK_SIZE}] with >= {MIN_BLOCKS_PER_COLUMN} blocks "
            f"in the narrowest K ({min(m.k for m in targets)}) dividing every K")
        block_size = block_size if block_size is not None else auto_block_size(targets)
        check_block_fits(targets, block_size, src)
        gemms = [m.name for m in targets if m.op_type == "Gemm"]
        weights_only = Path(scratch) / "int4" / dst.name if activations == "fp16" else dst
        if method == "rtn":  # one weight at a time: never the whole fp32 graph in memory
            opset_from = _rtn_file(folded, weights_only, Path(scratch), targets, block_size, opset,
                                   feeds[0] if feeds else None, gemms, on_weight)
            used, reason, awq = "rtn", None, None
        else:
            external = has_external_data(folded)
            staged = folded if folded != src else stage_model(src, Path(scratch) / "src")
            upgraded_file = Path(scratch) / "opset" / src.name
            opset_from = prepare_graph(staged, upgraded_file, opset, feeds[0], gemms)
            quantized, used, reason, awq = _quantize_weights(src, upgraded_file, method, feeds, inputs, block_size,
                                                             list(excluded), external, log)
            if quantized is not None:
                save_model(quantized, weights_only, external)
            else:  # fell back to RTN: written one weight at a time from the upgraded graph
                _rtn_file(upgraded_file, weights_only, Path(scratch), targets, block_size, opset, None, (), on_weight)
        auto = None
        if activations == "fp16":
            auto = autocast_file(weights_only, dst, feeds, keep_io_types=True, log=log).to_dict()
    final = onnx.load(str(dst), load_external_data=False)
    return Int4Report(
        method=method, method_used=used, modelopt_method=METHODS[used], block_size=block_size, block_size_source=source,
        activations=activations, opset_from=opset_from, opset=opset_of(final), fallback_reason=reason,
        nodes_quantized=dq_matmuls(final), nodes_excluded=excluded, awq_calibration=awq,
        weight_bytes=weight_bytes(final), ops=dict(Counter(n.op_type for n in final.graph.node).most_common()),
        autocast=auto, seconds=round(time.perf_counter() - start, 3),
    )


# --- ONNX Runtime's 4-bit kernel --------------------------------------------------------------
def ort_fused_matmuls(path: Path | str, optimized: Path | str | None = None) -> dict[str, int]:
    """Op counts of ONNX Runtime's optimized CPU graph of ``path`` (``MatMulNBits``, remaining DQ/MatMul).

    The session is the runners' own (:func:`~trt_pipeline.runtime.onnxruntime_runner.session`) at the
    ``extended`` level (every fusion but the hardware-specific layout ones, so the saved graph is
    portable) and its optimized model is written to ``optimized`` (default: a scratch file).
    """
    from trt_pipeline.runtime.onnxruntime_runner import OrtSettings, session

    path = Path(path)
    with tempfile.TemporaryDirectory(prefix=".ort-opt.", dir=path.parent) as scratch:
        target = Path(optimized) if optimized is not None else Path(scratch) / "optimized.onnx"
        session(path, settings=OrtSettings(optimization="extended"), optimized_model_path=target)
        graph = onnx.load(str(target), load_external_data=False).graph
        counts = Counter(n.op_type for n in graph.node)
    return {"MatMulNBits": counts["MatMulNBits"], "DequantizeLinear": counts["DequantizeLinear"],
            "MatMul": counts["MatMul"], "Cast": counts["Cast"]}


__all__ = [
    "ACTIVATIONS", "METHODS", "MIN_OPSET", "Int4Report", "WeightMatMul", "auto_block_size", "awq_feeds",
    "check_block_fits", "check_block_size", "check_opset", "check_whole_graph_memory", "dq_matmuls",
    "gemms_to_matmuls", "lm_head_names", "ort_fused_matmuls", "prepare_graph", "prepare_structure",
    "quantize_int4_file", "upgraded", "weight_bytes", "weight_matmuls",
]
