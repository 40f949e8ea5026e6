"""Node groups of a transformer graph: per layer x {attention projections, MLP}, plus the head.

The exported graphs carry no module names (the torch exporter's optimiser names GEMMs
``node_linear_4``, ``node_MatMul_38``; weights ``val_37``), so the groups come from the graph's
structure, which every GLM-4.1V layer (and every pre-norm transformer) shares:

* a **weighted GEMM** is a MatMul/Gemm one of whose inputs is an initializer (through Casts or a
  Transpose); the other MatMuls are attention BMMs (Q·K^T, P·V), never grouped;
* an **attention core** is a Softmax (or an ONNX ``Attention`` op); layer ``i`` has ``i`` cores
  upstream of its q/k/v projections and ``i + 1`` upstream of its o_proj and MLP;
* q/k/v reach an attention BMM or core before any other weighted GEMM, o_proj is the first
  weighted GEMM after the P·V BMM: together they are layer ``i``'s ``attn`` group; the other
  GEMMs of the layer are its ``mlp`` group;
* a GEMM past the last attention core that feeds a graph output directly (the decoder's LM head)
  is the ``head`` group. (In the vision encoder the patch merger after the last block has no
  such marker and joins the last block's ``mlp``; the search runs on the decoder.)

Why per layer x {attn, mlp} and not per layer: the two halves of a layer see different
activations (RMSNorm outputs feeding q/k/v and gate_up vs the attention output and the SwiGLU
product feeding o_proj / down_proj, the latter with the largest outliers), so their INT8 error
differs, and keeping only the sensitive half in fp16 keeps more of the model in INT8. Finer
(per GEMM) groups would multiply the search cost for little gain: GEMMs of one half share inputs.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import onnx

ATTENTION_CORES = ("Softmax", "Attention")
GEMMS = ("MatMul", "Gemm")
PASS_THROUGH = ("Cast", "Transpose", "Reshape", "Identity", "DequantizeLinear")


@dataclass(frozen=True)
class NodeGroup:
    """GEMMs quantized or kept in high precision together."""

    name: str  # "layer3.attn", "layer3.mlp", "head", "embed"
    layer: int | None
    role: str  # "attn" | "mlp" | "head" | "embed"
    nodes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "layer": self.layer, "role": self.role, "nodes": list(self.nodes)}


def _constant_tensors(model: onnx.ModelProto) -> set[str]:
    """Initializers and what Constant / pass-through ops derive from them alone."""
    constant = {t.name for t in model.graph.initializer}
    for node in model.graph.node:  # graph order is topological
        if node.op_type == "Constant" or (
            node.op_type in PASS_THROUGH and node.input and all(i in constant for i in node.input if i)
        ):
            constant.update(node.output)
    return constant


def weighted_gemms(model: onnx.ModelProto, op_types: Iterable[str] = GEMMS) -> list[onnx.NodeProto]:
    """MatMul/Gemm nodes with a constant (weight) operand, in graph order."""
    constant, wanted = _constant_tensors(model), set(op_types)
    return [n for n in model.graph.node if n.op_type in wanted and any(i in constant for i in n.input[:2])]


def consumers(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    """Tensor name -> the nodes reading it."""
    table: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            table.setdefault(name, []).append(node)
    return table


def _reaches(start: onnx.NodeProto, readers: dict[str, list[onnx.NodeProto]], targets: set[str],
             stops: set[str]) -> bool:
    """Does a path from ``start``'s outputs reach a node in ``targets`` without passing ``stops``?"""
    seen, queue = set(), deque(start.output)
    while queue:
        for node in readers.get(queue.popleft(), ()):
            if node.name in targets:
                return True
            if node.name in stops or node.name in seen:
                continue
            seen.add(node.name)
            queue.extend(node.output)
    return False


def _cores_upstream(model: onnx.ModelProto) -> dict[str, int]:
    """Per node: the number of attention cores on its longest upstream chain (= cores upstream)."""
    producer_count: dict[str, int] = {}
    counts: dict[str, int] = {}
    for node in model.graph.node:
        count = max((producer_count.get(i, 0) for i in node.input), default=0)
        counts[node.name] = count
        out = count + (node.op_type in ATTENTION_CORES)
        for name in node.output:
            producer_count[name] = out
    return counts


def node_groups(model: onnx.ModelProto, op_types: Sequence[str] = GEMMS) -> list[NodeGroup]:
    """The weighted GEMMs of ``model`` grouped per layer x {attn, mlp} + head, in layer order."""
    gemms = weighted_gemms(model, op_types)
    names = {n.name for n in gemms}
    bmms = [n for n in model.graph.node if n.op_type in GEMMS and n.name not in names]
    attention = {n.name for n in model.graph.node if n.op_type in ATTENTION_CORES} | {n.name for n in bmms}
    outputs = {o.name for o in model.graph.output}
    readers, upstream = consumers(model), _cores_upstream(model)
    layers = max((upstream[n.name] for n in model.graph.node if n.op_type in ATTENTION_CORES), default=-1) + 1
    after_attention = {n.name for bmm in bmms for n in _downstream_until(bmm, readers, names)}
    groups: dict[tuple[int | None, str], list[str]] = {}
    for node in gemms:
        count = upstream[node.name]
        if _reaches(node, readers, attention, names - {node.name}):
            key: tuple[int | None, str] = (count, "attn")  # q / k / v
        elif node.name in after_attention:
            key = (count - 1, "attn")  # o_proj
        elif count >= layers and _reaches_output(node, readers, outputs, names):
            key = (None, "head")  # the LM head
        elif count == 0:
            key = (None, "embed")  # before the first layer (the vision patch embedding)
        else:
            key = (count - 1, "mlp")
        groups.setdefault(key, []).append(node.name)
    rank = {"embed": -1, "head": layers}
    order = sorted(groups, key=lambda k: (rank[k[1]] if k[0] is None else k[0], k[1] != "attn"))
    return [NodeGroup(f"layer{layer}.{role}" if layer is not None else role, layer, role, tuple(groups[(layer, role)]))
            for layer, role in order]


def _reaches_output(node: onnx.NodeProto, readers: dict[str, list[onnx.NodeProto]], outputs: set[str],
                    gemms: set[str]) -> bool:
    """Does ``node`` feed a graph output without another weighted GEMM in between?"""
    seen, queue = set(), deque(node.output)
    while queue:
        name = queue.popleft()
        if name in outputs:
            return True
        for consumer in readers.get(name, ()):
            if consumer.name not in gemms and consumer.name not in seen:
                seen.add(consumer.name)
                queue.extend(consumer.output)
    return False


def _downstream_until(start: onnx.NodeProto, readers: dict[str, list[onnx.NodeProto]],
                      stops: set[str]) -> list[onnx.NodeProto]:
    """The ``stops`` nodes reached first from ``start`` (not passing another ``stops`` node)."""
    found, seen, queue = [], set(), deque(start.output)
    while queue:
        for node in readers.get(queue.popleft(), ()):
            if node.name in seen:
                continue
            seen.add(node.name)
            if node.name in stops:
                found.append(node)
            else:
                queue.extend(node.output)
    return found


__all__ = ["NodeGroup", "consumers", "node_groups", "weighted_gemms"]
