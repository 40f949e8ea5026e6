"""Memory-bounded export: trace without weights, then stream the checkpoint into external data.

The graph of an export does not depend on the weight values, so it is traced from a model built
on the ``meta`` device (shapes and dtypes only; no parameter is ever allocated). What the
``torch.onnx.export(dynamo=True)`` program holds in place of each weight is a meta tensor; those
initializers are *detached* (their values set to nothing), which turns the graph weight-free:
the onnxscript optimizer then simplifies it (constant folding, shape arithmetic, dead code)
without being able to fold, copy or even read a weight. Afterwards every initializer gets a
lazy tensor that reads its checkpoint tensor from the memory-mapped safetensors shard, and
``onnx_ir.save`` writes them one after another into ``COMPONENT.onnx.data``; each is released
once written, so the peak holds one tensor (the largest, the 151552 x 4096 LM head: 1.24 GB in
bf16) plus the interpreter, torch and the weight-free graph.

The initializers are the checkpoint's own tensors, byte for byte when the export dtype is the
checkpoint dtype: weight transforms the modules apply (``Linear`` as ``MatMul`` with a transposed
weight, the patch-embedding and downsample convolutions as a reshaped matrix) stay ``Transpose``
and ``Reshape`` nodes on the initializer in the graph, which TensorRT and ONNX Runtime fold when
they load the model. So ``sha256(initializer) == sha256(checkpoint tensor)`` checks the export.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from trt_pipeline.errors import CheckpointError, OnnxModelError
from trt_pipeline.models.glm4v.io_spec import ComponentSpec
from trt_pipeline.models.glm4v.weights import TensorEntry

#: checkpoints above this many weight bytes export streaming by default (the in-memory path's
#: onnxsim works only below 2 GB anyway)
STREAMING_THRESHOLD_BYTES = 2 * 1024**3

#: the vision encoder's parameters are ``visual.*`` in the export model; the decoder's keep their names
COMPONENT_PREFIX = {"vision_encoder": "visual.", "decoder": ""}


def trace_weight_free(
    module: torch.nn.Module, spec: ComponentSpec, example_args: tuple[torch.Tensor, ...], opset: int,
    variadic_from: int | None,
) -> Any:
    """``torch.onnx.export(dynamo=True)`` of a meta-device module; returns the program's onnx_ir Model.

    ``optimize=False``: the exporter's optimizer would try to read the (meta) weights; the
    weight-free optimisation runs afterwards in :func:`optimize_weight_free`."""
    from trt_pipeline.export.onnx_export import dynamic_shapes

    args = tuple(a.to("meta") for a in example_args)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module, args, input_names=spec.input_names, output_names=spec.output_names,
            dynamic_shapes=dynamic_shapes(spec, args, variadic_from), dynamo=True, opset_version=opset,
            optimize=False, verbose=False, report=False,
        )
    return program.model


def detach_weights(model: Any, parameter_names: set[str]) -> dict[str, Any]:
    """Drop the (meta) value of every parameter initializer; returns them by name.

    Any other initializer would be a constant the trace produced; none is expected, and one
    that is still a meta tensor cannot be written, so it is refused here rather than on save."""
    detached = {}
    for name, value in list(model.graph.initializers.items()):
        if name in parameter_names:
            value.const_value = None
            detached[name] = value
        elif getattr(getattr(value.const_value, "raw", None), "is_meta", False):
            raise OnnxModelError(f"weight-free trace left a meta constant {name!r} that is not a parameter.")
    return detached


def optimize_weight_free(model: Any) -> dict[str, int]:
    """onnxscript's optimizer on the graph whose weights have no values (nothing to fold into)."""
    import logging

    import onnxscript.optimizer

    before = sum(1 for _ in model.graph)
    quiet = [logging.getLogger(name) for name in ("onnx_ir", "onnxscript")]
    levels = [logger.level for logger in quiet]
    for logger in quiet:  # "skipped deduplication ... no constant value" per weight: expected here
        logger.setLevel(logging.ERROR)
    try:
        onnxscript.optimizer.optimize(model)
    finally:
        for logger, level in zip(quiet, levels):
            logger.setLevel(level)
    return {"nodes_before": before, "nodes_after": sum(1 for _ in model.graph)}


def checkpoint_tensor(entry: TensorEntry, dtype: torch.dtype) -> torch.Tensor:
    """One checkpoint tensor, in ``dtype`` (converted only when the checkpoint differs)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(entry.file), framework="pt", device="cpu") as handle:
            tensor = handle.get_tensor(entry.checkpoint_name)
    except SafetensorError as error:
        raise CheckpointError(f"{entry.file}: cannot read {entry.checkpoint_name} ({error}).",
                              path=entry.file, hint="re-download this shard.") from None
    return tensor.to(dtype) if tensor.dtype != dtype else tensor


def attach_weights(
    detached: Mapping[str, Any], source: Callable[[str], TensorEntry], dtype: torch.dtype
) -> dict[str, str]:
    """Give each detached initializer a lazy tensor reading its checkpoint tensor; returns
    initializer name -> checkpoint tensor name (for the manifest and the hash check)."""
    import onnx_ir as ir
    from onnx_ir.tensor_adapters import TorchTensor

    mapping = {}
    for name, value in detached.items():
        entry = source(name)

        def load(entry: TensorEntry = entry, name: str = name) -> Any:
            return TorchTensor(checkpoint_tensor(entry, dtype), name=name)

        value.const_value = ir.LazyTensor(load, dtype=ir.tensor_adapters.from_torch_dtype(dtype),
                                          shape=ir.Shape(entry.shape), name=name)
        mapping[name] = entry.checkpoint_name
    return mapping


def save_with_external_data(model: Any, path: Path) -> Path:
    """Write the graph and stream every initializer into ``PATH.data`` (one tensor in flight)."""
    import onnx_ir as ir

    data = path.with_name(path.name + ".data")
    ir.save(model, str(path), external_data=data.name, max_workers=1,
            max_in_flight_bytes=64 * 1024**2)
    return data


def use_streaming(requested: bool | None, checkpoint: Path) -> bool:
    """``--streaming/--in-memory``; by default streaming above :data:`STREAMING_THRESHOLD_BYTES`."""
    if requested is not None:
        return requested
    from trt_pipeline.models.glm4v.weights import scan_checkpoint

    return sum(e.nbytes for e in scan_checkpoint(checkpoint).values()) > STREAMING_THRESHOLD_BYTES


def describe_needs(checkpoint: Path, disk_bytes: int, requested: bool | None) -> str:
    """One line for the start of ``export``: the disk it writes and the memory it will hold.

    Streaming holds the largest single tensor plus ~1.5 GB of interpreter, torch and graph
    (measured: 1.73 GB RSS for a 3.8 GB real-width checkpoint); in memory holds the weights
    in the export dtype about 1.3 times (measured on the fp32 presets)."""
    from trt_pipeline.models.glm4v.weights import scan_checkpoint

    entries = scan_checkpoint(checkpoint).values()
    total = sum(e.nbytes for e in entries)
    largest = max((e.nbytes for e in entries), default=0)
    streaming = use_streaming(requested, checkpoint)
    memory = largest + int(1.5 * 1024**3) if streaming else int(1.3 * total)
    return (f"export needs ~{disk_bytes / 1e9:.1f} GB of disk and ~{memory / 1e9:.1f} GB of memory "
            f"({'streaming' if streaming else 'in memory'}; checkpoint weights {total / 1e9:.1f} GB)")


def meta_model(dims: Any, dtype: torch.dtype) -> Any:
    """The export model on the ``meta`` device in ``dtype``: every shape, no storage."""
    from trt_pipeline.models.glm4v.model import Glm4vExportModel

    with torch.device("meta"):
        model = Glm4vExportModel(dims)
    return model.to(dtype).eval()


def checked_entries(checkpoint: Path, model: Any) -> dict[str, TensorEntry]:
    """The checkpoint's tensors (headers only), refused when one is missing or mis-shaped;
    ``lm_head.weight`` of a tied checkpoint is an alias of the embedding table."""
    from trt_pipeline.models.glm4v.weights import check_expected, scan_checkpoint

    entries = scan_checkpoint(checkpoint)
    expected = {name: tuple(p.shape) for name, p in model.named_parameters()}
    tied = {"lm_head.weight"} if model.dims.tie_word_embeddings else set()
    check_expected(entries, expected, checkpoint, optional=tied)
    if "lm_head.weight" not in entries:
        entries["lm_head.weight"] = entries["language_model.embed_tokens.weight"]
    return entries


def save_tables_streaming(entries: Mapping[str, TensorEntry], folder: Path, dtype: torch.dtype) -> None:
    """Host tables (token embeddings, vision position table) copied one tensor at a time."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    for key, file in (("language_model.embed_tokens.weight", "embed_tokens.safetensors"),
                      ("visual.embeddings.position_embedding.weight", "vision_pos_embed.safetensors")):
        save_file({"weight": checkpoint_tensor(entries[key], dtype).contiguous()}, str(folder / file))


def export_component_streaming(
    module: torch.nn.Module, spec: ComponentSpec, example_args: tuple[torch.Tensor, ...], path: Path,
    opset: int, variadic_from: int | None, entries: Mapping[str, TensorEntry], dtype: torch.dtype,
) -> dict[str, Any]:
    """Trace weight-free, simplify weight-free, stream the weights; returns the manifest facts."""
    import onnx

    from trt_pipeline.export.onnx_export import check_and_infer, rename_dims, unname_unread_outputs

    model = trace_weight_free(module, spec, example_args, opset, variadic_from)
    detached = detach_weights(model, {name for name, _ in module.named_parameters()})
    simplify = optimize_weight_free(model)
    kept = {name: value for name, value in model.graph.initializers.items() if name in detached}
    prefix = COMPONENT_PREFIX[spec.name]
    mapping = attach_weights(kept, lambda name: entries[prefix + name], dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = save_with_external_data(model, path)
    del model, detached, kept
    proto = onnx.load(str(path), load_external_data=False)
    rename_dims(proto, spec)
    unname_unread_outputs(proto)
    onnx.save(proto, str(path))
    del proto
    check_and_infer(path)
    return {
        "file": path.name,
        "external_data": data.name,
        "bytes": path.stat().st_size + data.stat().st_size,
        "streamed": True,
        "simplify": {**simplify, "method": "onnxscript optimizer on the weight-free graph (onnxsim not run)"},
        "initializers": mapping,
    }


def _sha256_range(file: Path, offset: int, length: int, block: int = 64 * 1024**2) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(file, "rb") as handle:
        handle.seek(offset)
        while length > 0:
            data = handle.read(min(block, length))
            if not data:
                break
            digest.update(data)
            length -= len(data)
    return digest.hexdigest()


def checkpoint_range(entry: TensorEntry) -> tuple[int, int]:
    """(offset, length) of a tensor's bytes inside its safetensors file."""
    import json
    import struct

    with open(entry.file, "rb") as handle:
        (header_len,) = struct.unpack("<Q", handle.read(8))
        begin, end = json.loads(handle.read(header_len))[entry.checkpoint_name]["data_offsets"]
    return 8 + header_len + begin, end - begin


def verify_initializer_hashes(onnx_file: Path, checkpoint: Path) -> dict[str, Any]:
    """sha256 of every external initializer vs its checkpoint tensor, 64 MB at a time.

    Pairs come from the component's ``initializers`` map in ``manifest.json`` next to the file.
    Returns counts and the names that differ (``equal`` is True when none does)."""
    import hashlib

    import onnx

    from trt_pipeline.artifacts import read_json
    from trt_pipeline.models.glm4v.weights import scan_checkpoint

    manifest = read_json(onnx_file.parent / "manifest.json")
    mapping = manifest["components"][onnx_file.stem]["initializers"]
    by_name = {e.checkpoint_name: e for e in scan_checkpoint(checkpoint).values()}
    model = onnx.load(str(onnx_file), load_external_data=False)
    differ, checked = [], 0
    for tensor in model.graph.initializer:
        if tensor.name not in mapping:
            continue
        info = {entry.key: entry.value for entry in tensor.external_data}
        if "location" in info:
            ours = _sha256_range(onnx_file.parent / info["location"], int(info.get("offset", 0)), int(info["length"]))
        else:  # stored inline
            ours = hashlib.sha256(tensor.raw_data).hexdigest()
        theirs = _sha256_range(by_name[mapping[tensor.name]].file, *checkpoint_range(by_name[mapping[tensor.name]]))
        checked += 1
        if ours != theirs:
            differ.append(tensor.name)
    return {"checked": checked, "expected": len(mapping), "differ": differ, "equal": not differ and checked == len(mapping)}


__all__ = [
    "COMPONENT_PREFIX", "attach_weights", "checked_entries", "export_component_streaming", "meta_model",
    "describe_needs", "save_tables_streaming", "use_streaming", "verify_initializer_hashes", "checkpoint_tensor", "detach_weights", "optimize_weight_free",
    "save_with_external_data", "trace_weight_free",
]
