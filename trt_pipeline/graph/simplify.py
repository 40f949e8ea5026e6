"""onnxsim simplification with dynamic axes kept, verified equal on ONNX Runtime.

onnxsim folds constants and removes redundant shape arithmetic that the torch exporter emits.
It works on an in-memory ModelProto (< 2 GB); larger models are skipped with a clear warning
(TensorRT's own constant folding covers what onnxsim would do). Each simplified model is run
against the original on ONNX Runtime with random inputs of two different shapes and replaced
only when the outputs agree; node counts before/after are reported.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from trt_pipeline.artifacts import atomic_path
from trt_pipeline.config import SimplifyConfig
from trt_pipeline.errors import OnnxModelError
from trt_pipeline.graph.autocast import stores_external_data
from trt_pipeline.models.glm4v.io_spec import LOGITS_POSITIONS
from trt_pipeline.progress import log, progress_bar


def _model_bytes(path: Path) -> int:
    data = path.with_name(path.name + ".data")
    return path.stat().st_size + (data.stat().st_size if data.exists() else 0)


def random_feed(session: Any, sizes: dict[str, int], seed: int) -> dict[str, np.ndarray]:
    """Inputs for every graph input with symbolic dims set from ``sizes`` (defaults 2)."""
    rng = np.random.default_rng(seed)
    feed = {}
    for node in session.get_inputs():
        shape = [d if isinstance(d, int) else sizes.get(d, 2) for d in node.shape]
        if node.name == LOGITS_POSITIONS:  # indices into the sequence: the last ``num_logits`` positions
            seq = sizes.get("sequence_length", 2)
            feed[node.name] = np.arange(seq - shape[0], seq, dtype=np.int64)
        elif "int64" in node.type:
            feed[node.name] = np.ones(shape, dtype=np.int64)
        elif "float16" in node.type:
            feed[node.name] = rng.standard_normal(shape).astype(np.float16)
        else:
            feed[node.name] = rng.standard_normal(shape).astype(np.float32)
    return feed


def consistent_sizes(variant: int) -> dict[str, int]:
    """Two shape sets that respect the derived dims (total = past + sequence, tokens = patches / 4)."""
    batch, seq, past, patches = [(1, 5, 3, 16), (2, 1, 6, 32)][variant]
    return {
        "num_logits": min(2, seq),
        "batch_size": batch,
        "sequence_length": seq,
        "past_sequence_length": past,
        "total_sequence_length": seq + past,
        "num_patches": patches,
        "num_image_tokens": patches // 4,
    }


def max_abs_diff(original: Path, candidate: Path, cfg: SimplifyConfig) -> float:
    from trt_pipeline.runtime.onnxruntime_runner import session

    reference, simplified = session(original), session(candidate)
    worst = 0.0
    for variant in range(cfg.check_n):
        feed = random_feed(reference, consistent_sizes(variant % 2), seed=variant)
        for a, b in zip(reference.run(None, feed), simplified.run(None, feed)):
            worst = max(worst, float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))) if a.size else worst
    return worst


def simplify_model(path: Path, cfg: SimplifyConfig = SimplifyConfig()) -> dict[str, Any]:
    """Simplify one ONNX file in place (atomically); returns node counts and the check."""
    import onnxsim

    path = Path(path)
    if not path.is_file():
        raise OnnxModelError(f"{path} not found.", path=path, hint="run `autoglm-trt export` first.")
    size = _model_bytes(path)
    model = onnx.load(str(path), load_external_data=False)  # one in-memory copy (inline weights included)
    before = len(model.graph.node)
    external = stores_external_data(model)
    if size > cfg.skip_above_bytes:
        log(f"[yellow]warning:[/] {path.name} is {size / 1e9:.1f} GB (> 2 GB protobuf limit): simplification skipped")
        return {"skipped": f"model is {size} bytes, above the 2 GB onnxsim limit", "nodes_before": before}
    if external:
        from onnx.external_data_helper import load_external_data_for_model

        load_external_data_for_model(model, str(path.parent))
    try:
        simplified, ok = onnxsim.simplify(model, skip_shape_inference=False)
    except Exception as error:  # onnxsim raises RuntimeError/ValueError from its C++ core
        log(f"[yellow]warning:[/] onnxsim failed on {path.name}: {error}; kept the unsimplified model")
        return {"skipped": f"onnxsim failed: {error}", "nodes_before": before}
    if not ok:
        return {"skipped": "onnxsim's own check failed", "nodes_before": before}
    keep_io_dim_names(model, simplified)
    del model  # onnxsim returned a new model
    after = len(simplified.graph.node)
    with tempfile.TemporaryDirectory(dir=path.parent) as scratch:
        candidate = Path(scratch) / path.name
        _save(simplified, candidate, external)
        del simplified  # the check below runs two ORT sessions from disk
        diff = max_abs_diff(path, candidate, cfg)
        if diff > cfg.atol:
            raise OnnxModelError(
                f"simplified {path.name} differs from the original by {diff:.3g} (> {cfg.atol}).",
                path=path,
                hint="re-run with --no-simplify and report the model to onnxsim.",
            )
        _replace(candidate, path, external)
    return {"nodes_before": before, "nodes_after": after, "max_abs_diff": diff}


def keep_io_dim_names(original: onnx.ModelProto, simplified: onnx.ModelProto) -> None:
    """Put the original symbolic axis names back on graph inputs/outputs.

    onnxsim's shape inference may rename an axis (``num_logits`` of the 1-D ``logits_positions``
    came back as ``unk__148``); export.json and the TensorRT profiles address axes by name.
    """
    names = {v.name: v.type.tensor_type.shape.dim for v in (*original.graph.input, *original.graph.output)}
    for value in (*simplified.graph.input, *simplified.graph.output):
        dims = value.type.tensor_type.shape.dim
        before = names.get(value.name)
        if before is None or len(before) != len(dims):
            continue
        for dim, old in zip(dims, before):
            if old.dim_param:
                dim.Clear()
                dim.dim_param = old.dim_param


def _save(model: onnx.ModelProto, path: Path, external: bool) -> None:
    if external:
        onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=path.name + ".data", size_threshold=1024)
    else:
        onnx.save(model, str(path))


def _replace(candidate: Path, target: Path, external: bool) -> None:
    if external:
        data = candidate.with_name(candidate.name + ".data")
        with atomic_path(target.with_name(target.name + ".data")) as tmp:
            shutil.move(str(data), tmp)
    with atomic_path(target) as tmp:
        shutil.move(str(candidate), tmp)


def simplify_folder(folder: Path, cfg: SimplifyConfig = SimplifyConfig(), show_progress: bool = True) -> dict[str, dict]:
    """Simplify every ``*.onnx`` in a precision folder; returns per-component reports."""
    folder = Path(folder)
    files = sorted(folder.glob("*.onnx"))
    if not files:
        raise OnnxModelError(f"no *.onnx files in {folder}.", path=folder, hint="run `autoglm-trt export` first.")
    reports = {}
    with progress_bar(show_progress) as progress:
        task = progress.add_task("simplify", total=len(files))
        for file in files:
            progress.update(task, description=f"simplifying {file.name}")
            reports[file.stem] = simplify_model(file, cfg)
            progress.advance(task)
    return reports
