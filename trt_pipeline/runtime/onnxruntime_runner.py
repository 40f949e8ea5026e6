"""ONNX Runtime runners: Polygraphy's ``OnnxrtRunner`` over a CPU session of an exported file.

We use Polygraphy's own runner rather than a wrapper of ours, so ``Comparator.run`` and the
generation loop drive ONNX Runtime exactly as they drive torch and TensorRT.
"""

from __future__ import annotations

from pathlib import Path

from trt_pipeline.artifacts.manifests import verified_onnx
from trt_pipeline.errors import OnnxModelError

PRECISIONS = ("fp32", "fp16", "int8")


def onnx_path(out_dir: Path | str, precision: str, component: str, *, verify: bool = True) -> Path:
    """``OUT/onnx/PRECISION/COMPONENT.onnx``, checked against its manifest's size and sha256.

    Refuses a missing file with what to run, and (``verify``) a file whose bytes differ from the
    manifest (:class:`~trt_pipeline.errors.ArtifactIntegrityError` naming it).
    """
    return verified_onnx(out_dir, precision, component, verify=verify)


def session(path: Path | str, threads: int | None = None):
    """A CPU InferenceSession with full graph optimisation; corrupt files raise OnnxModelError."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own Fail/InvalidGraph/... classes
        raise OnnxModelError(
            f"ONNX Runtime cannot load {path}: {str(error).splitlines()[0]}",
            path=path,
            hint="the file is corrupt or incomplete; re-run the export/precision stage that wrote it.",
        ) from None


def ort_runner(path: Path | str, name: str | None = None):
    from polygraphy.backend.onnxrt import OnnxrtRunner

    path = Path(path)
    return OnnxrtRunner(lambda: session(path), name=name or f"ort-{path.parent.name}-{path.stem}")


def ort_component_runners(out_dir: Path | str, precision: str = "fp32", *, verify: bool = True):
    """(vision, decoder) ONNX Runtime runners of one precision folder (files verified first)."""
    return (
        ort_runner(onnx_path(out_dir, precision, "vision_encoder", verify=verify)),
        ort_runner(onnx_path(out_dir, precision, "decoder", verify=verify)),
    )
