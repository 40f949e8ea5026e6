"""ONNX Runtime runners: Polygraphy's ``OnnxrtRunner`` over a CPU session of an exported file.

We use Polygraphy's own runner rather than a wrapper of ours, so ``Comparator.run`` and the
generation loop drive ONNX Runtime exactly as they drive torch and TensorRT.
"""

from __future__ import annotations

from pathlib import Path

from trt_pipeline.errors import OnnxModelError

PRECISIONS = ("fp32", "fp16", "int8")


def onnx_path(out_dir: Path | str, precision: str, component: str) -> Path:
    """``OUT/onnx/PRECISION/COMPONENT.onnx``, refusing a missing file with what to run."""
    path = Path(out_dir) / "onnx" / precision / f"{component}.onnx"
    if not path.is_file():
        producer = "autoglm-trt export" if precision == "fp32" else f"autoglm-trt precision {precision}"
        raise OnnxModelError(
            f"{path} not found.", path=path, hint=f"run `{producer}` for {Path(out_dir)} first."
        )
    return path


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


def ort_component_runners(out_dir: Path | str, precision: str = "fp32"):
    """(vision, decoder) ONNX Runtime runners of one precision folder."""
    return (
        ort_runner(onnx_path(out_dir, precision, "vision_encoder")),
        ort_runner(onnx_path(out_dir, precision, "decoder")),
    )
