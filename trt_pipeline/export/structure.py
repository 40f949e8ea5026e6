"""Structural comparison of two exports of one architecture that differ in layer count.

A model too big to run here is validated numerically on a layer-truncated *twin*
(:mod:`trt_pipeline.export.twin`); what ties the full export to that result is this check: the full
graph is the twin's graph with its repeated layers repeated more times. Both are traced by the same
code, so any difference (a layer traced differently, a weight wired to the wrong layer, a constant
folded differently) shows up here.

Each node is assigned to a layer by the module scope the exporter records on it
(``pkg.torch.onnx.name_scopes``: ``language_model.layers.i`` / ``blocks.i``) or to ``rest``. A layer
is described by its nodes in graph order, each as op type, domain, attributes (tensors by content
hash) and, per input, where it comes from with every name removed:

* a node of the same layer: its local index and output slot;
* a node of another layer: its op type and position counted from that layer's end (the exporter's
  common-subexpression pass parks shape arithmetic shared by all layers in layer 0, and the
  previous layer's residual output ends every layer, so both are stable under renumbering);
* a node of ``rest``: its op type and local index there;
* a weight: its name with the layer index removed, dtype and shape; any other initializer: its
  dtype, shape and content hash; a graph input: its name with the layer index removed.

The full export matches the twin when ``rest`` is equal, layers ``0..K-1`` are equal pairwise, and
every later layer equals the twin's last layer (layer 0 is special: its inputs come from ``rest``).
"""

from __future__ import annotations

import ast
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: module scopes of one repeated layer: the text decoder's and the vision tower's
LAYER_SCOPE = re.compile(r"^(?:language_model\.layers|blocks)\.(\d+)$")
#: a graph input or output of one layer: ``past_key_values.7.key``, ``present.7.value``
LAYER_NAME = re.compile(r"\.(\d+)\.")
REST = ("rest", -1)
#: ops whose input order carries no meaning (the tracer orders symbolic sizes by their symbol names)
COMMUTATIVE = frozenset({"Add", "Mul", "And", "Or", "Xor", "Equal", "Max", "Min", "Sum", "Mean"})
Group = tuple[str, int]


@dataclass
class GraphLayers:
    """A graph cut into groups: ``rest``, each layer, and each layer's *prelude* (the shape arithmetic
    on that layer's graph inputs, which the exporter places outside the layer's scope)."""

    groups: dict[Group, list[tuple]] = field(default_factory=dict)
    #: digest -> (op, attributes, inputs) of each shape-arithmetic value (see ``_is_shape_arithmetic``)
    shape_keys: dict[str, tuple] = field(default_factory=dict)

    @property
    def num_layers(self) -> int:
        return len([g for g in self.groups if g[0] == "layer"])


def _scope_group(node: Any) -> Group:
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            for scope in ast.literal_eval(prop.value):
                match = LAYER_SCOPE.match(scope)
                if match:
                    return ("layer", int(match.group(1)))
    return REST


def _assign_groups(nodes: Any, place_group: dict[str, Group]) -> list[Group]:
    """Layer scope first. An unscoped node belongs to layer i's *prelude* when it reads layer i's graph
    input (``past_key_values.i.*``) or a node of that prelude, or when it reads from layer i alone and
    only layer i reads its outputs (a ``Split`` of a layer's tensor that the tracer placed outside the
    layer's scope); what is left is ``rest``."""
    readers: dict[str, list[Any]] = {}
    for node in nodes:
        for value in node.input:
            readers.setdefault(value, []).append(node)
    groups = []
    for node in nodes:
        group = _scope_group(node)
        if group == REST:
            group = _prelude(node, place_group, lambda n: {_scope_group(c) for o in n.output for c in readers.get(o, [])})
        for value in node.output:
            place_group[value] = group
        groups.append(group)
    return groups


def _prelude(node: Any, place_group: dict[str, Group], consumers: Any) -> Group:
    named, produced, from_rest = set(), set(), False
    for value in node.input:
        source = place_group.get(value)
        if source is None:
            match = LAYER_NAME.search(value)
            if match:
                named.add(int(match.group(1)))
        elif source == REST:
            from_rest = True
        elif source[0] == "pre":
            named.add(source[1])
        else:
            produced.add(source[1])
    if len(named) == 1 and not produced:
        return ("pre", named.pop())
    if len(named | produced) == 1 and not from_rest and consumers(node) == {("layer", next(iter(named | produced)))}:
        return ("pre", (named | produced).pop())
    return REST


def _strip_layer(name: str, group: Group) -> str:
    """``past_key_values.7.key`` / ``language_model.layers.7.mlp...`` in layer 7 -> ``...{L}...``."""
    return re.sub(rf"(?<=\.){group[1]}(?=\.)", "{L}", name) if group != REST else name


def _tensor_digest(tensor: Any, folder: Path) -> tuple:
    """dtype, dims and sha256 of a (small) initializer or attribute tensor, inline or external."""
    info = {entry.key: entry.value for entry in tensor.external_data}
    if "location" in info:
        with open(folder / info["location"], "rb") as handle:
            handle.seek(int(info.get("offset", 0)))
            data = handle.read(int(info["length"]))
    else:
        import onnx.numpy_helper

        data = onnx.numpy_helper.to_array(tensor).tobytes()
    return (tensor.data_type, tuple(tensor.dims), hashlib.sha256(data).hexdigest()[:16])


def _attribute(attr: Any, folder: Path) -> tuple:
    import onnx

    if attr.type == onnx.AttributeProto.TENSOR:
        return attr.name, _tensor_digest(attr.t, folder)
    value = onnx.helper.get_attribute_value(attr)
    return attr.name, tuple(value) if isinstance(value, list) else value


def graph_layers(path: Path | str, weights: set[str] | None = None) -> GraphLayers:
    """Cut the ONNX at ``path`` (external data is not loaded) into canonical per-group node lists.

    ``weights``: initializer names that are checkpoint weights (described by name); default:
    every initializer whose name holds a ``.`` (the exporter's own constants are ``val_N``)."""
    import onnx

    path = Path(path)
    graph = onnx.load(str(path), load_external_data=False).graph
    context = _Context(inits={t.name: t for t in graph.initializer}, inputs={i.name for i in graph.input},
                       folder=path.parent)
    context.weights = weights if weights is not None else {n for n in context.inits if "." in n}
    outputs = {o.name for o in graph.output}
    nodes = [node for node in graph.node if not _is_shape_arithmetic(node, graph, context)]
    groups = _assign_groups(nodes, {})
    for node, group in zip(nodes, groups):
        index = context.sizes.get(group, 0)
        for slot, value in enumerate(node.output):
            context.place[value] = (group, index, slot)
        context.ops[(group, index)] = node.op_type
        context.sizes[group] = index + 1
    result = GraphLayers(shape_keys=context.shape_keys)
    for node, group in zip(nodes, groups):
        refs = _ordered(node, tuple(context.describe(value, group) for value in node.input))
        outs = tuple(_strip_layer(o, group) if o in outputs else "" for o in node.output)
        attrs = tuple(sorted(_attribute(a, path.parent) for a in node.attribute))
        result.groups.setdefault(group, []).append((node.op_type, node.domain, attrs, refs, outs))
    return result


def _ordered(node: Any, refs: tuple) -> tuple:
    """Inputs of a commutative op sorted: the tracer orders symbolic sizes by symbol name (Add(s, p) / Add(p, s))."""
    return tuple(sorted(refs, key=repr)) if node.op_type in COMMUTATIVE and node.domain == "" else refs


def _input_dims(graph: Any, name: str) -> tuple:
    for value in graph.input:
        if value.name == name:
            return tuple(d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim)
    return ()


def _is_shape_arithmetic(node: Any, graph: Any, context: _Context) -> bool:
    """Shape of a graph input, or an op on only such values and constants: described by value.

    The tracer reads a symbolic size from whichever input carries it (the batch size from
    ``attention_mask`` in one graph, from ``past_key_values.39.key`` in another with more layers)
    and deduplicates such reads across layers, so these nodes are compared by what they compute:
    op, attributes and the symbolic dims (or constants) they start from, never by position."""
    folder = context.folder
    attrs = tuple(sorted(_attribute(a, folder) for a in node.attribute))
    if node.op_type == "Shape" and node.input[0] in context.inputs:
        dims, slices = _input_dims(graph, node.input[0]), dict(attrs)
        key: tuple = ("Shape", dims[slices.get("start", 0): slices.get("end", len(dims))])
    elif node.input and all(v in context.shape_values or (v in context.inits and v not in context.weights)
                            for v in node.input) and any(v in context.shape_values for v in node.input):
        refs = tuple(context.shape_values.get(v) or ("const", *_tensor_digest(context.inits[v], folder))
                     for v in node.input)
        key = (node.op_type, node.domain, attrs, _ordered(node, refs))
    else:
        return False
    digest = hashlib.sha256(repr(key).encode()).hexdigest()[:16]
    context.shape_keys[digest] = key
    for slot, value in enumerate(node.output):
        context.shape_values[value] = ("shape arithmetic", digest, slot)
    return True


@dataclass
class _Context:
    """What describing a node input needs: where every value is produced, and the initializers."""

    inits: dict[str, Any]
    inputs: set[str]
    folder: Path
    weights: set[str] = field(default_factory=set)
    place: dict[str, tuple[Group, int, int]] = field(default_factory=dict)  # value -> (group, index, slot)
    sizes: dict[Group, int] = field(default_factory=dict)
    ops: dict[tuple[Group, int], str] = field(default_factory=dict)
    shape_values: dict[str, tuple] = field(default_factory=dict)  # value -> its description by value
    shape_keys: dict[str, tuple] = field(default_factory=dict)  # digest -> what it computes (for messages)

    def describe(self, value: str, group: Group) -> tuple:
        """Where one node input comes from, without names (see the module docstring)."""
        if value == "":
            return ("none",)
        if value in self.shape_values:
            return self.shape_values[value]
        if value in self.place:
            source, index, slot = self.place[value]
            op = self.ops[(source, index)]
            if source == group:
                return ("self", index, slot)
            if source == REST:
                return ("rest", op, index, slot)
            if source == ("pre", group[1]):
                return ("own prelude", op, index, slot)
            return (source[0], op, self.sizes[source] - index, slot)  # another layer: counted from its end
        if value in self.inits:
            tensor = self.inits[value]
            if value in self.weights:
                return ("weight", _strip_layer(value, group), tensor.data_type, tuple(tensor.dims))
            return ("const", *_tensor_digest(tensor, self.folder))
        if value in self.inputs:
            return ("input", _strip_layer(value, group))
        return ("unknown", value)


def _first_difference(a: list[tuple], b: list[tuple]) -> str:
    if len(a) != len(b):
        return f"{len(a)} nodes vs {len(b)}"
    for index, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"node {index}: {x[0]} {x[3]} vs {y[0]} {y[3]}"
    return ""


def compare_to_twin(full: GraphLayers, twin: GraphLayers) -> dict[str, Any]:
    """Check ``full`` against ``twin`` (see the module docstring); returns counts and differences."""
    k = twin.num_layers
    differences = []
    pairs = [(REST, REST)] + [((kind, i), (kind, min(i, k - 1))) for i in range(full.num_layers) for kind in ("layer", "pre")]
    unknown = [g for g in full.groups if g != REST and g[1] >= full.num_layers]
    for ours, theirs in pairs:
        difference = _first_difference(full.groups.get(ours, []), twin.groups.get(theirs, []))
        if difference:
            differences.append(f"{ours[0]} {ours[1]} vs twin {theirs[0]} {theirs[1]}: {difference}")
    differences += [f"nodes of unknown layer {g}" for g in unknown]
    return {
        "layers": full.num_layers, "twin_layers": k,
        "nodes": sum(len(v) for v in full.groups.values()), "twin_nodes": sum(len(v) for v in twin.groups.values()),
        "nodes_per_layer": len(twin.groups.get(("layer", k - 1), [])) + len(twin.groups.get(("pre", k - 1), [])),
        "differences": differences[:10],
        "identical": not differences and k >= 2 and full.num_layers >= k,
    }


__all__ = ["GraphLayers", "compare_to_twin", "graph_layers"]
