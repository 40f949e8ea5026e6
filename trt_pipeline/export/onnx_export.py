"""torch -> ONNX for one component: dynamic axes, spec names, external data, checker, shapes.

Uses the ``torch.export``-based exporter (``torch.onnx.export(dynamo=True)``) with every
declared symbolic axis marked ``Dim.DYNAMIC``; the exporter names axes ``s0, s1, ...`` and
writes sums like ``s3 + s7``, so afterwards graph inputs/outputs get the names from
:mod:`trt_pipeline.models.glm4v.io_spec` (Optimum's vocabulary: ``batch_size``,
``sequence_length``, ``past_sequence_length``) which export.json and the TensorRT profiles use.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import onnx
import torch

from trt_pipeline.errors import OnnxModelError
from trt_pipeline.artifacts.layout import external_data_path
from trt_pipeline.graph.autocast import EXTERNAL_ABOVE_BYTES
from trt_pipeline.models.glm4v.io_spec import ComponentSpec


def dynamic_shapes(spec: ComponentSpec, args: tuple[torch.Tensor, ...], variadic_from: int | None):
    """torch.export ``dynamic_shapes`` for a component's example args from its spec's symbolic axes
    (shared by the in-memory and the weight-free streamed export, so both trace the same graph)."""
    from torch.export import Dim

    def axes(tensor_spec) -> dict[int, object]:
        return {i: Dim.DYNAMIC for i, d in enumerate(tensor_spec.shape) if isinstance(d, str)}

    specs = [axes(t) for t in spec.inputs]
    if variadic_from is None:
        return tuple(specs)
    return (*specs[:variadic_from], tuple(specs[variadic_from:]))


def rename_dims(model: onnx.ModelProto, spec: ComponentSpec) -> None:
    """Give graph inputs/outputs the spec's symbolic axis names; drop stale intermediate shapes."""
    tables = {t.name: t for t in (*spec.inputs, *spec.outputs)}
    for value in (*model.graph.input, *model.graph.output):
        declared = tables.get(value.name)
        if declared is None:
            raise OnnxModelError(f"exported graph has an undeclared tensor {value.name!r}.")
        dims = value.type.tensor_type.shape.dim
        if len(dims) != len(declared.shape):
            raise OnnxModelError(
                f"exported tensor {value.name} has rank {len(dims)}, expected {len(declared.shape)}."
            )
        for dim, name in zip(dims, declared.shape):
            if isinstance(name, str):
                dim.Clear()
                dim.dim_param = name
    del model.graph.value_info[:]


#: (domain, op) -> indices of outputs ONNX Runtime computes only when they are named
_OPTIONAL_OUTPUTS = {("com.microsoft", "SkipSimplifiedLayerNormalization"): (1, 2, 3)}


def unname_unread_outputs(model: onnx.ModelProto) -> int:
    """Leave the optional outputs of contrib ops that nothing reads unnamed; -> how many.

    ``torch.onnx.ops.symbolic_multi_out`` names every output of the ops it emits, and ONNX Runtime
    computes a named output even when no node reads it: the ``onnxruntime`` flavour's
    ``SkipSimplifiedLayerNormalization`` would write its mean and inverse std-dev per token in every
    layer (its sum is read; those two are not).
    """
    read = {name for node in model.graph.node for name in node.input} | {o.name for o in model.graph.output}
    count = 0
    for node in model.graph.node:
        for index in _OPTIONAL_OUTPUTS.get((node.domain, node.op_type), ()):
            if index < len(node.output) and node.output[index] and node.output[index] not in read:
                node.output[index] = ""
                count += 1
    return count


def export_component(
    module: torch.nn.Module,
    spec: ComponentSpec,
    example_args: tuple[torch.Tensor, ...],
    path: Path,
    opset: int,
    external_data: bool | None,
    variadic_from: int | None = None,
) -> dict[str, object]:
    """Export ``module`` to ``path``; returns facts for the manifest (external data, sizes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module,
            example_args,
            input_names=spec.input_names,
            output_names=spec.output_names,
            dynamic_shapes=dynamic_shapes(spec, example_args, variadic_from),
            dynamo=True,
            opset_version=opset,
            optimize=True,
            verbose=False,
            report=False,
        )
    weight_bytes = sum(p.numel() * p.element_size() for p in module.parameters())
    use_external = external_data if external_data is not None else weight_bytes > EXTERNAL_ABOVE_BYTES
    program.save(str(path), external_data=use_external)
    del program
    model = onnx.load(str(path), load_external_data=False)
    rename_dims(model, spec)
    unname_unread_outputs(model)
    onnx.save(model, str(path))
    del model
    check_and_infer(path)
    data_file = external_data_path(path)
    return {
        "file": path.name,
        "external_data": data_file.name if use_external and data_file.exists() else None,
        "bytes": path.stat().st_size + (data_file.stat().st_size if data_file.exists() else 0),
    }


def check_and_infer(path: Path) -> None:
    """``onnx.checker`` on the path (works above 2 GB) and shape inference in place."""
    try:
        onnx.checker.check_model(str(path), full_check=False)
        onnx.shape_inference.infer_shapes_path(str(path), str(path))
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:
        raise OnnxModelError(f"{path} fails the ONNX checker: {error}", path=path) from None


def relative_external_data_ok(path: Path) -> bool:
    """True when every external-data location in the model is a relative path next to it."""
    model = onnx.load(str(path), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location" and (os.path.isabs(entry.value) or ".." in Path(entry.value).parts):
                return False
    return True
