"""ONNX Runtime sessions and runners: the one place an ``InferenceSession`` is made.

Every ONNX Runtime session of the package (generate, serve, compare, validate, bench, the
precision stages) comes from :func:`session`, configured by one :class:`OrtSettings` (intra/inter-op
threads, execution mode, graph optimisation level, IO binding), so a setting chosen on the command
line reaches every session of that command and is recorded with its results.

Runners are Polygraphy's ``OnnxrtRunner`` (``Comparator.run`` and the generation loop drive ONNX
Runtime exactly as they drive torch and TensorRT), or, with ``io_binding`` (the default), its
subclass :class:`~trt_pipeline.runtime.ort_binding.BoundOrtRunner`, which binds outputs to reused
buffers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from trt_pipeline.artifacts.manifests import verified_onnx
from trt_pipeline.errors import ConfigError, OnnxModelError
from trt_pipeline.precisions import PRECISIONS  # noqa: F401 - re-exported: the one registry

EXECUTION_MODES = ("sequential", "parallel")
OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")


@dataclass(frozen=True)
class OrtSettings:
    """How ONNX Runtime CPU sessions run.

    ``intra_op_threads`` / ``inter_op_threads``: None leaves ONNX Runtime's default (intra: one
    per physical core; inter: only used in ``parallel`` mode). ``optimization``: the graph
    optimisation level (``all`` includes the layout and contrib-op fusions, e.g.
    SimplifiedLayerNormalization). ``io_binding``: outputs written into reused buffers
    (:mod:`~trt_pipeline.runtime.ort_binding`) instead of per-call allocations. ``spinning``:
    whether intra-op worker threads busy-wait for work (ONNX Runtime's default) or sleep
    (``session.intra_op.allow_spinning`` 0); on a host whose cores are shared (a server whose other
    threads do work between runs, a loaded machine) spinning threads burn the CPU time the others
    need: a small-preset decode step measured 150 ms spinning vs 68 ms not, on 2 cores at load 20.
    """

    intra_op_threads: int | None = None
    inter_op_threads: int | None = None
    execution_mode: str = "sequential"
    optimization: str = "all"
    io_binding: bool = True
    spinning: bool = True

    def __post_init__(self) -> None:
        for name in ("intra_op_threads", "inter_op_threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {value}.")
        if self.execution_mode not in EXECUTION_MODES:
            raise ConfigError(f"--ort-execution-mode must be one of {', '.join(EXECUTION_MODES)}, "
                              f"got {self.execution_mode!r}.")
        if self.optimization not in OPTIMIZATION_LEVELS:
            raise ConfigError(f"--ort-optimization must be one of {', '.join(OPTIMIZATION_LEVELS)}, "
                              f"got {self.optimization!r}.")

    def session_options(self, optimized_model_path: Path | str | None = None) -> Any:
        """``onnxruntime.SessionOptions`` of these settings (+ where to save the optimised graph)."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        if self.intra_op_threads:
            options.intra_op_num_threads = self.intra_op_threads
        if self.inter_op_threads:
            options.inter_op_num_threads = self.inter_op_threads
        if not self.spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.execution_mode = (ort.ExecutionMode.ORT_PARALLEL if self.execution_mode == "parallel"
                                  else ort.ExecutionMode.ORT_SEQUENTIAL)
        options.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[self.optimization]
        if optimized_model_path is not None:  # the graph after ONNX Runtime's optimizer, weights beside it
            options.optimized_model_filepath = str(optimized_model_path)
            options.add_session_config_entry("session.optimized_model_external_initializers_file_name",
                                             Path(optimized_model_path).name + ".data")
            options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
        return options

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def onnx_path(out_dir: Path | str, precision: str, component: str, *, verify: bool = True) -> Path:
    """``OUT/onnx/PRECISION/COMPONENT.onnx``, checked against its manifest's size and sha256.

    Refuses a missing file with what to run, and (``verify``) a file whose bytes differ from the
    manifest (:class:`~trt_pipeline.errors.ArtifactIntegrityError` naming it).
    """
    return verified_onnx(out_dir, precision, component, verify=verify)


def session(path: Path | str, threads: int | None = None, settings: OrtSettings | None = None,
            optimized_model_path: Path | str | None = None):
    """A CPU InferenceSession of ``settings`` (default: full graph optimisation; ``threads`` sets the
    intra-op threads when no settings are given); corrupt files raise OnnxModelError."""
    import onnxruntime as ort

    settings = settings or OrtSettings(intra_op_threads=threads)
    options = settings.session_options(optimized_model_path)
    try:
        # fp16 graphs need no disabled optimizer: AutoCast's output divides its norms by the root through
        # Reciprocal, which ORT 1.24's crashing SimplifiedLayerNormFusion does not match (graph/half_norms.py)
        return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own Fail/InvalidGraph/... classes
        raise OnnxModelError(
            f"ONNX Runtime cannot load {path}: {str(error).splitlines()[0]}",
            path=path,
            hint="the file is corrupt or incomplete; re-run the export/precision stage that wrote it.",
        ) from None


def ort_runner(path: Path | str, name: str | None = None, settings: OrtSettings | None = None):
    """A Polygraphy runner over a lazily made :func:`session` (IO-bound unless ``settings`` say not)."""
    from polygraphy.backend.onnxrt import OnnxrtRunner

    settings = settings or OrtSettings()
    path = Path(path)
    if settings.io_binding:
        from trt_pipeline.runtime.ort_binding import BoundOrtRunner

        cls = BoundOrtRunner
    else:
        cls = OnnxrtRunner
    return cls(lambda: session(path, settings=settings), name=name or f"ort-{path.parent.name}-{path.stem}")


def ort_component_runners(out_dir: Path | str, precision: str = "fp32", *, verify: bool = True,
                          settings: OrtSettings | None = None):
    """(vision, decoder) ONNX Runtime runners of one precision folder (files verified first)."""
    return (
        ort_runner(onnx_path(out_dir, precision, "vision_encoder", verify=verify), settings=settings),
        ort_runner(onnx_path(out_dir, precision, "decoder", verify=verify), settings=settings),
    )
