"""The runner set of a comparison: a registry of backend kinds, each discovering its variants.

Every backend yields Polygraphy ``BaseRunner``s per component, so ``Comparator.run`` and the
token-level check (``greedy_generate``) drive all of them the same way:

==============  ===========================================================  =====================
kind            runners                                                      variants
==============  ===========================================================  =====================
torch-export    :class:`~trt_pipeline.runtime.torch_runner.TorchModuleRunner`  ``torch-export`` (fp32)
                over the export-friendly modules (isolates modelling from
                export problems)
ort             Polygraphy ``OnnxrtRunner`` on ``OUT/onnx/PRECISION``          ``ort-fp32/fp16/int8``
trt             :class:`~trt_pipeline.runtime.tensorrt_runner.TensorRTRunner`  ``trt-PRECISION`` per
                on ``OUT/engines/COMPONENT.PRECISION.engine`` (``--engines``)  engine pair found
==============  ===========================================================  =====================

The reference (transformers) is not a candidate: see
:func:`~trt_pipeline.runtime.transformers_runner.transformers_component_runners`.

Missing precision folders are skipped with a line (``skipped: OUT/onnx/int8 not found; run
`autoglm-trt precision int8```) unless the precision was requested explicitly, which makes it an
:class:`~trt_pipeline.errors.OnnxModelError`. ``--engines`` with no engine at all, or without
TensorRT/GPU, is an error too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trt_pipeline.artifacts.layout import OutputLayout, engine_file_name, engine_path
from trt_pipeline.artifacts.manifests import read_export_manifest
from trt_pipeline.errors import OnnxModelError, PipelineError

COMPONENTS = ("vision_encoder", "decoder")


@dataclass
class Backend:
    """One candidate: a name (``ort-fp16``), its precision and a runner factory per component."""

    name: str
    kind: str
    precision: str
    components: tuple[str, ...]
    factory: Callable[[str], Any]
    location: Path | None = None

    def runner(self, component: str) -> Any:
        """A fresh runner for ``component`` named ``BACKEND:COMPONENT``."""
        if component not in self.components:
            raise PipelineError(f"backend {self.name} has no {component} runner.")
        return self.factory(component)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "precision": self.precision,
                "components": list(self.components), "location": str(self.location) if self.location else None}


@dataclass
class Skip:
    backend: str
    precision: str
    reason: str

    def line(self) -> str:
        return f"skipped: {self.reason} ({self.backend})"

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "precision": self.precision, "reason": self.reason}


@dataclass
class DiscoveryContext:
    out_dir: Path
    cfg: Any  # CompareConfig
    checkpoint: Path | None
    components: tuple[str, ...]
    #: check every ONNX file against its precision manifest (sha256 + size) before it is loaded
    verify: bool = True
    _torch_model: Any = field(default=None, repr=False)

    @property
    def layout(self) -> OutputLayout:
        return OutputLayout(self.out_dir)

    def torch_model(self) -> Any:
        """The export-friendly modules of the checkpoint, tracing the flavour the export was made with
        (export.json's decoder ops and KV cache: the module compared is the one that was exported)."""
        if self._torch_model is None:
            from trt_pipeline.models.glm4v.model import Glm4vExportModel

            manifest = read_export_manifest(self.out_dir)
            model = Glm4vExportModel.from_pretrained(self.checkpoint, dtype="float32")
            model.decoder.use_graph(manifest.decoder_ops, manifest.kv_cache)
            self._torch_model = model
        return self._torch_model


Discovered = tuple[list[Backend], list[Skip]]


def discover_torch_export(ctx: DiscoveryContext) -> Discovered:
    if not ctx.cfg.torch_export:
        return [], []
    if ctx.checkpoint is None:
        return [], [Skip("torch-export", "fp32", "no source checkpoint")]

    def factory(component: str) -> Any:
        from trt_pipeline.models.glm4v.io_spec import component_spec
        from trt_pipeline.runtime.torch_runner import TorchModuleRunner

        model = ctx.torch_model()
        module = model.vision_encoder if component == "vision_encoder" else model.decoder
        spec = component_spec(model.dims, component, kv_cache=model.decoder.kv_cache)
        return TorchModuleRunner(module, spec, name=f"torch-export:{component}")

    return [Backend("torch-export", "torch-export", "fp32", ctx.components, factory, ctx.checkpoint)], []


def _producer(precision: str) -> str:
    return "autoglm-trt export" if precision == "fp32" else f"autoglm-trt precision {precision}"


def discover_ort(ctx: DiscoveryContext) -> Discovered:
    from trt_pipeline.runtime.onnxruntime_runner import onnx_path, ort_runner

    backends, skips = [], []
    for precision in ctx.cfg.requested_precisions:
        folder = ctx.layout.onnx_dir(precision)
        missing = [c for c in ctx.components if not ctx.layout.onnx_path(precision, c).is_file()]
        if missing:
            what = f"{folder} not found" if not folder.is_dir() else (
                f"{', '.join(str(ctx.layout.onnx_path(precision, c)) for c in missing)} not found")
            reason = f"{what}; run `{_producer(precision)}`"
            if ctx.cfg.explicit_precisions:
                raise OnnxModelError(
                    f"precision {precision} was requested but {what}.",
                    path=folder,
                    hint=f"run `{_producer(precision)} {ctx.out_dir}` first, or leave {precision} out of --precisions.",
                )
            skips.append(Skip(f"ort-{precision}", precision, reason))
            continue

        paths = {c: onnx_path(ctx.out_dir, precision, c, verify=ctx.verify) for c in ctx.components}

        def factory(component: str, paths: dict[str, Path] = paths, precision: str = precision) -> Any:
            return ort_runner(paths[component], name=f"ort-{precision}:{component}")

        backends.append(Backend(f"ort-{precision}", "ort", precision, ctx.components, factory, folder))
    return backends, skips


def discover_trt(ctx: DiscoveryContext) -> Discovered:
    if not ctx.cfg.engines:
        return [], []
    backends, skips = [], []
    for precision in ctx.cfg.requested_precisions:
        present = tuple(c for c in ctx.components if engine_path(ctx.out_dir, c, precision).is_file())
        if not present:
            skips.append(Skip(f"trt-{precision}", precision,
                              f"no {ctx.layout.engine_glob(precision)}; run `autoglm-trt build --{precision}`"))
            continue

        def factory(component: str, precision: str = precision) -> Any:
            from trt_pipeline.runtime.tensorrt_runner import TensorRTRunner

            return TensorRTRunner(engine_path(ctx.out_dir, component, precision), name=f"trt-{precision}:{component}")

        backends.append(Backend(f"trt-{precision}", "trt", precision, present, factory, ctx.layout.engines_dir))
    if not backends:
        raise OnnxModelError(
            f"--engines was given but {ctx.layout.engines_dir} holds no {engine_file_name('COMPONENT', 'PRECISION')} for "
            f"{', '.join(ctx.cfg.requested_precisions)}.",
            path=ctx.layout.engines_dir,
            hint=f"build engines on a GPU host (`autoglm-trt build {ctx.out_dir}`) or drop --engines.",
        )
    from trt_pipeline.engine.tensorrt_import import require_tensorrt

    require_tensorrt()  # TensorRTUnavailableError with an install hint on a machine without TensorRT/GPU
    return backends, skips


#: Backend kinds in report order. Add a kind here to compare a new runtime.
BACKEND_KINDS: dict[str, Callable[[DiscoveryContext], Discovered]] = {
    "torch-export": discover_torch_export,
    "ort": discover_ort,
    "trt": discover_trt,
}


def discover_backends(ctx: DiscoveryContext) -> Discovered:
    """Every candidate backend available for this export (and the skipped ones, with reasons)."""
    backends: list[Backend] = []
    skips: list[Skip] = []
    for discover in BACKEND_KINDS.values():
        found, skipped = discover(ctx)
        backends += found
        skips += skipped
    return backends, skips


__all__ = [
    "BACKEND_KINDS",
    "Backend",
    "DiscoveryContext",
    "Skip",
    "discover_backends",
    "engine_path",
]
