"""TensorRT optimization profiles derived from ``export.json`` dims, with trtexec-style overrides.

``export.json`` names every symbolic axis of the ONNX graphs and gives it ``min/opt/max``
(docs/artifacts.md). A *recipe* per component turns those dims into profiles:

* ``decoder``: a **prefill** profile (``past_sequence_length`` = 0, ``sequence_length`` over its
  range), a **decode** profile (``sequence_length`` = 1, ``past_sequence_length`` >= 1), as
  TensorRT Edge-LLM does, and an **append** profile (``sequence_length`` >= 2 on a filled cache,
  ``past_sequence_length`` >= 1) for chunked prefill and follow-up turns; ``total_sequence_length`` follows from its ``expr``
  (``past_sequence_length + sequence_length``) in each profile. No input needs to carry
  ``past_sequence_length`` itself: an ``--kv-cache inplace`` export's cache inputs span
  ``total_sequence_length`` (``[B, past + S, kv * D]``), so their ranges are past + sequence too.
* ``vision_encoder``: one **image** profile over ``num_patches``.
* anything else: one **default** profile over all dims.

User overrides use the trtexec vocabulary (``--min-shapes inputs_embeds:1x64x4096,...``). They are
translated back onto the symbolic dims (``inputs_embeds`` axis 1 is ``sequence_length``), so the
recipe keeps its structure: a ``sequence_length`` override shapes the prefill profile, the decode
profile keeps ``sequence_length`` = 1.

At run time :func:`select_profile` picks the profile for a set of input shapes (decoder:
``sequence_length`` > 1 -> prefill (empty cache) or append (filled cache), == 1 -> decode, falling back to any profile that fits).
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from trt_pipeline.artifacts.layout import EXPORT_MANIFEST
from trt_pipeline.artifacts.manifests import DimSpec, TensorSpec, parse_dims, parse_tensor_specs
from trt_pipeline.errors import ConfigError, OnnxModelError, ShapeError

Shape = tuple[int, ...]
KINDS = ("min", "opt", "max")


# --------------------------------------------------------------------------------------------
# Data types
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShapeRange:
    """``min/opt/max`` shapes of one input in one profile (what ``IOptimizationProfile.set_shape`` takes)."""

    min: Shape
    opt: Shape
    max: Shape

    def __post_init__(self) -> None:
        if not (len(self.min) == len(self.opt) == len(self.max)):
            raise ConfigError(f"min/opt/max shapes have different ranks: {self.min}, {self.opt}, {self.max}")

    @property
    def rank(self) -> int:
        return len(self.min)

    def ordered(self) -> bool:
        return all(lo <= mid <= hi for lo, mid, hi in zip(self.min, self.opt, self.max))

    def contains(self, shape: Sequence[int]) -> bool:
        return len(shape) == self.rank and all(lo <= int(v) <= hi for lo, v, hi in zip(self.min, shape, self.max))

    def to_json(self) -> dict[str, list[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    @classmethod
    def from_json(cls, data: Mapping[str, Sequence[int]]) -> ShapeRange:
        return cls(tuple(int(v) for v in data["min"]), tuple(int(v) for v in data["opt"]), tuple(int(v) for v in data["max"]))

    def __str__(self) -> str:
        fmt = "x".join
        return f"min {fmt(map(str, self.min))}, opt {fmt(map(str, self.opt))}, max {fmt(map(str, self.max))}"


@dataclass(frozen=True)
class Profile:
    """One optimization profile: a name and a shape range per dynamic input."""

    name: str
    shapes: Mapping[str, ShapeRange] = field(default_factory=dict)

    def violation(self, shapes: Mapping[str, Sequence[int]]) -> str | None:
        """Why ``shapes`` do not fit this profile, or ``None`` when they do."""
        for name, rng in self.shapes.items():
            if name not in shapes:
                return f"input {name} is missing"
            shape = tuple(int(v) for v in shapes[name])
            if len(shape) != rng.rank:
                return f"{name} has rank {len(shape)}, profile expects {rng.rank}"
            for axis, (lo, v, hi) in enumerate(zip(rng.min, shape, rng.max)):
                if not lo <= v <= hi:
                    return f"{name} axis {axis} = {v} is outside {lo}..{hi}"
        return None

    def accepts(self, shapes: Mapping[str, Sequence[int]]) -> bool:
        return self.violation(shapes) is None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "shapes": {name: rng.to_json() for name, rng in self.shapes.items()}}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Profile:
        return cls(name=str(data["name"]), shapes={k: ShapeRange.from_json(v) for k, v in data["shapes"].items()})


@dataclass(frozen=True)
class ProfileRecipe:
    """How to turn the exported dims into one profile.

    Attributes:
        name: profile name (``prefill``, ``decode``, ``append``, ``image``, ``default``).
        fixed: dims pinned to one value (min = opt = max).
        at_least: lower bounds raised on dims (min and opt are lifted to the bound).
        opt: preferred opt values (e.g. derived from a measured workload), clamped into the
            profile's min..max; dims not named keep the exported opt. New shaping knobs go here as
            further fields with empty defaults, so existing recipes keep their meaning.
    """

    name: str
    fixed: Mapping[str, int] = field(default_factory=dict)
    at_least: Mapping[str, int] = field(default_factory=dict)
    opt: Mapping[str, int] = field(default_factory=dict)


#: One table of profile recipes per component (registry, not if/elif).
PROFILE_RECIPES: dict[str, tuple[ProfileRecipe, ...]] = {
    "decoder": (
        ProfileRecipe("prefill", fixed={"past_sequence_length": 0}),
        # one new token: the LM head runs on that one position (``num_logits`` exports only)
        ProfileRecipe("decode", fixed={"sequence_length": 1, "num_logits": 1}, at_least={"past_sequence_length": 1}),
        # several new tokens on a filled cache: chunked prefill (each chunk after the first), a
        # follow-up turn of a conversation. Without it such a step has no profile (review failure 2).
        ProfileRecipe("append", at_least={"past_sequence_length": 1, "sequence_length": 2}),
    ),
    "vision_encoder": (ProfileRecipe("image"),),
}
DEFAULT_RECIPES: tuple[ProfileRecipe, ...] = (ProfileRecipe("default"),)


def _past_length(shapes: Mapping[str, Sequence[int]]) -> int | None:
    """Cached tokens: the attention mask's ``total_sequence_length`` minus the new tokens of
    ``inputs_embeds``. Read off the mask, not a cache input, whose axes differ between the KV-cache
    layouts (``concat`` ``[B, kv, past, D]``; ``inplace`` ``[B, past + S, kv * D]``)."""
    mask, embeds = shapes.get("attention_mask"), shapes.get("inputs_embeds")
    if mask is None or embeds is None or len(mask) < 2 or len(embeds) < 2:
        return None
    return int(mask[1]) - int(embeds[1])


def _decoder_preference(shapes: Mapping[str, Sequence[int]]) -> str | None:
    """prefill: several tokens, empty cache; append: several tokens on a filled cache; decode: one token."""
    embeds = shapes.get("inputs_embeds")
    if embeds is None or len(embeds) < 2:
        return None
    if int(embeds[1]) <= 1:
        return "decode"
    return "append" if (_past_length(shapes) or 0) > 0 else "prefill"


#: Which profile a component prefers for given input shapes (tried first by :func:`select_profile`).
PROFILE_PREFERENCES: dict[str, Callable[[Mapping[str, Sequence[int]]], str | None]] = {
    "decoder": _decoder_preference,
}


# --------------------------------------------------------------------------------------------
# expressions ("past_sequence_length + sequence_length", "num_patches / 4")
# --------------------------------------------------------------------------------------------

_OPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
}


def eval_dim_expr(expr: str, values: Mapping[str, int]) -> int:
    """Evaluate a dim expression over named integer values (``+ - * / //`` and integer literals only)."""

    def walk(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return Fraction(_OPS[type(node.op)](walk(node.left), walk(node.right)))
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return Fraction(node.value)
        if isinstance(node, ast.Name):
            if node.id not in values:
                raise ConfigError(f"dim expression {expr!r} uses unknown dim {node.id!r}")
            return Fraction(values[node.id])
        raise ConfigError(f"unsupported dim expression {expr!r} (only + - * / // on dims and integers)")

    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError:
        raise ConfigError(f"cannot parse dim expression {expr!r}") from None
    result = walk(tree)
    if result.denominator != 1:
        raise ConfigError(f"dim expression {expr!r} gives a non-integer value {result} for {dict(values)}")
    return int(result)


# --------------------------------------------------------------------------------------------
# overrides
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShapeOverrides:
    """trtexec-style ``--min-shapes/--opt-shapes/--max-shapes``: tensor name -> shape, per kind."""

    min: Mapping[str, Shape] = field(default_factory=dict)
    opt: Mapping[str, Shape] = field(default_factory=dict)
    max: Mapping[str, Shape] = field(default_factory=dict)

    def by_kind(self) -> dict[str, Mapping[str, Shape]]:
        return {"min": self.min, "opt": self.opt, "max": self.max}

    def names(self) -> set[str]:
        return set(self.min) | set(self.opt) | set(self.max)

    def __bool__(self) -> bool:
        return bool(self.names())

    def to_json(self) -> dict[str, dict[str, list[int]]]:
        return {kind: {k: list(v) for k, v in m.items()} for kind, m in self.by_kind().items() if m}


def apply_overrides(
    dims: Mapping[str, DimSpec],
    inputs: Sequence[TensorSpec],
    overrides: ShapeOverrides | None,
    *,
    notes: list[str] | None = None,
) -> dict[str, DimSpec]:
    """Translate tensor-shape overrides onto the symbolic dims they name.

    Rules (each violation is a :class:`ConfigError` naming the tensor and axis):
    the rank must match the exported input; static axes must keep their exported size; derived
    dims (with an ``expr``) cannot be overridden directly; two tensors sharing a dim must agree.
    Names that are not inputs of this component are ignored here (they may belong to another
    component; :func:`check_override_names` rejects names unknown to every component).
    """
    if not overrides:
        return dict(dims)
    by_name = {spec.name: spec for spec in inputs}
    chosen: dict[str, dict[str, tuple[int, str]]] = {kind: {} for kind in KINDS}
    for kind, mapping in overrides.by_kind().items():
        for tensor, shape in mapping.items():
            spec = by_name.get(tensor)
            if spec is None:
                continue
            if len(shape) != len(spec.shape):
                raise ConfigError(
                    f"--{kind}-shapes {tensor}: got {len(shape)} dims ({_fmt(shape)}), the exported input has "
                    f"{len(spec.shape)} ({_fmt(spec.shape)})"
                )
            for axis, (value, dim) in enumerate(zip(shape, spec.shape)):
                if isinstance(dim, int):
                    if value != dim:
                        raise ConfigError(
                            f"--{kind}-shapes {tensor}: axis {axis} is static ({dim}) in the exported graph, got {value}"
                        )
                    continue
                if dim not in dims:
                    raise OnnxModelError(f"{EXPORT_MANIFEST} names dim {dim!r} for input {tensor} but does not define it in dims")
                if dims[dim].derived:
                    raise ConfigError(
                        f"--{kind}-shapes {tensor}: axis {axis} is {dim} = {dims[dim].expr}; it follows from the "
                        f"other dims, override those instead"
                    )
                previous = chosen[kind].get(dim)
                if previous is not None and previous[0] != value:
                    raise ConfigError(
                        f"--{kind}-shapes: {dim} is {previous[0]} in {previous[1]} but {value} in {tensor}"
                    )
                chosen[kind][dim] = (value, tensor)
    out = dict(dims)
    for name in {d for per_kind in chosen.values() for d in per_kind}:
        base = dims[name]
        values = {kind: chosen[kind][name][0] if name in chosen[kind] else base.value(kind) for kind in KINDS}
        if not values["min"] <= values["opt"] <= values["max"]:
            raise ConfigError(
                f"shape overrides make {name} min/opt/max = {values['min']}/{values['opt']}/{values['max']}; "
                "need min <= opt <= max"
            )
        if notes is not None and (values["min"] < base.min or values["max"] > base.max):
            notes.append(
                f"{name} range {values['min']}..{values['max']} goes beyond the exported {base.min}..{base.max}; "
                "the ONNX was only checked inside the exported range"
            )
        out[name] = DimSpec(name, values["min"], values["opt"], values["max"], None)
    return out


def check_override_names(overrides: ShapeOverrides | None, known_inputs: Sequence[str]) -> None:
    """Reject override names that are not an input of any component."""
    if not overrides:
        return
    unknown = sorted(overrides.names() - set(known_inputs))
    if unknown:
        raise ConfigError(
            f"shape overrides name unknown inputs: {', '.join(unknown)}; known inputs: {', '.join(sorted(known_inputs))}"
        )


# --------------------------------------------------------------------------------------------
# derivation
# --------------------------------------------------------------------------------------------


def _resolve_profile_dims(
    recipe: ProfileRecipe, dims: Mapping[str, DimSpec], exported: Mapping[str, DimSpec] | None = None
) -> dict[str, DimSpec]:
    """Per-profile dims: ``dims`` (with user overrides) shaped by the recipe.

    Pinned values (``fixed``) must lie in the *exported* range (``exported``): user overrides shape
    the other profiles (a ``sequence_length`` override is for prefill; decode stays at 1).
    """
    exported = exported or dims
    resolved: dict[str, DimSpec] = {}
    for name, dim in dims.items():
        if dim.derived:
            continue
        lo, mid, hi = dim.min, dim.opt, dim.max
        if name in recipe.fixed:
            value = int(recipe.fixed[name])
            base = exported.get(name, dim)
            if not base.min <= value <= base.max:
                raise ConfigError(
                    f"the {recipe.name} profile needs {name} = {value}, but the exported range is {base.min}..{base.max}"
                )
            lo = mid = hi = value
        if name in recipe.at_least:
            bound = int(recipe.at_least[name])
            if hi < bound:
                raise ConfigError(
                    f"the {recipe.name} profile needs {name} >= {bound}, but the allowed range is {dim.min}..{dim.max}"
                )
            lo, mid = max(lo, bound), max(mid, bound)
        if name in recipe.opt:
            mid = min(max(int(recipe.opt[name]), lo), hi)
        resolved[name] = DimSpec(name, lo, mid, hi)

    def value_of(name: str, kind: str, stack: tuple[str, ...]) -> int:
        if name in resolved:
            return resolved[name].value(kind)
        if name not in dims:
            raise ConfigError(f"dim expression refers to unknown dim {name!r}")
        if name in stack:
            raise ConfigError(f"dim expressions are circular: {' -> '.join(stack + (name,))}")
        expr = dims[name].expr or ""
        return eval_dim_expr(expr, {n: value_of(n, kind, stack + (name,)) for n in _expr_names(expr)})

    for name, dim in dims.items():
        if dim.derived:
            values = [value_of(name, kind, ()) for kind in KINDS]
            resolved[name] = DimSpec(name, *values, expr=dim.expr)
    return resolved


def apply_workload_opts(resolved: dict[str, DimSpec], opts: Mapping[str, int] | None) -> dict[str, DimSpec]:
    """Move each named dim's ``opt`` to the workload's typical value, kept inside min..max.

    TensorRT tunes kernels for ``opt``; the workload (export.json ``workload.profiles``) knows the
    typical request of each profile (a 4.6k first prefill, a 3.5k append onto an 8k cache), which
    the midpoint of a range does not.
    """
    if not opts:
        return resolved
    out = dict(resolved)
    for name, value in opts.items():
        dim = out.get(name)
        if dim is not None and not dim.derived:
            out[name] = DimSpec(name, dim.min, min(dim.max, max(dim.min, int(value))), dim.max)
    return out


def derive_profiles(
    component: str,
    inputs: Sequence[TensorSpec],
    dims: Mapping[str, DimSpec],
    overrides: ShapeOverrides | None = None,
    *,
    notes: list[str] | None = None,
    workload_opts: Mapping[str, Mapping[str, int]] | None = None,
) -> tuple[Profile, ...]:
    """Optimization profiles for one component.

    Args:
        component: ``decoder``, ``vision_encoder``, ... (selects the recipe from :data:`PROFILE_RECIPES`).
        inputs: the component's graph inputs (symbolic dims by name).
        dims: ``export.json`` dims (see :func:`parse_dims`).
        overrides: trtexec-style shape overrides.
        notes: if given, receives human-readable warnings (overrides beyond the exported range).
        workload_opts: per profile name, opt values of dims (export.json ``workload.profiles``);
            user overrides of ``opt`` win over them.

    Returns:
        One :class:`Profile` per recipe, each covering every input that has a symbolic dim.
    """
    effective = apply_overrides(dims, inputs, overrides, notes=notes)
    used = {d for spec in inputs for d in spec.shape if isinstance(d, str)}
    missing = sorted(used - set(effective))
    if missing:
        raise OnnxModelError(f"{EXPORT_MANIFEST} uses dims {', '.join(missing)} for {component} inputs but does not define them")
    relevant = {name: effective[name] for name in _dependency_closure(used, effective) if name in effective}
    profiles = []
    for recipe in PROFILE_RECIPES.get(component, DEFAULT_RECIPES):
        opts = (workload_opts or {}).get(recipe.name) if not (overrides and overrides.by_kind().get("opt")) else None
        resolved = _resolve_profile_dims(recipe, apply_workload_opts(dict(relevant), opts), dims)
        shapes: dict[str, ShapeRange] = {}
        for spec in inputs:
            if not spec.dynamic:
                continue
            per_kind = {
                kind: tuple(d if isinstance(d, int) else resolved[d].value(kind) for d in spec.shape) for kind in KINDS
            }
            rng = ShapeRange(per_kind["min"], per_kind["opt"], per_kind["max"])
            if not rng.ordered():
                raise ConfigError(f"{component} {recipe.name} profile: {spec.name} is not min <= opt <= max ({rng})")
            shapes[spec.name] = rng
        profiles.append(Profile(recipe.name, shapes))
    return tuple(profiles)


def _expr_names(expr: str) -> set[str]:
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError:
        raise ConfigError(f"cannot parse dim expression {expr!r}") from None
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}


def _dependency_closure(used: set[str], dims: Mapping[str, DimSpec]) -> set[str]:
    """``used`` plus every dim that a used derived dim's expression depends on (transitively)."""
    closure: set[str] = set()
    todo = list(used)
    while todo:
        name = todo.pop()
        if name in closure:
            continue
        closure.add(name)
        spec = dims.get(name)
        if spec is not None and spec.expr:
            todo.extend(_expr_names(spec.expr) - closure)
    return closure


# --------------------------------------------------------------------------------------------
# validation against the ONNX graph
# --------------------------------------------------------------------------------------------


def read_onnx_inputs(path: Path | str) -> dict[str, tuple[int | str | None, ...]]:
    """Graph inputs of an ONNX file (initializers excluded) with ``dim_value`` / ``dim_param`` / None.

    Only the graph is read (``load_external_data=False``): fast even for a multi-GB decoder.
    """
    import onnx

    path = Path(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # protobuf DecodeError, OSError
        raise OnnxModelError(f"cannot read ONNX graph {path}: {error}", path=path) from None
    initializers = {init.name for init in model.graph.initializer}
    inputs: dict[str, tuple[int | str | None, ...]] = {}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        dims: list[int | str | None] = []
        for d in value.type.tensor_type.shape.dim:
            if d.HasField("dim_value") and d.dim_value > 0:
                dims.append(int(d.dim_value))
            elif d.HasField("dim_param"):
                dims.append(d.dim_param)
            else:
                dims.append(None)
        inputs[value.name] = tuple(dims)
    return inputs


def validate_profiles(
    profiles: Sequence[Profile],
    onnx_inputs: Mapping[str, Sequence[int | str | None]],
    *,
    path: Path | str | None = None,
) -> None:
    """Check profiles against the ONNX graph inputs before TensorRT sees them.

    Every input with a dynamic axis must be covered by every profile; ranks must match; static axes
    must have min = opt = max = their size; every range must be min <= opt <= max; profiles must
    not name inputs the graph does not have.

    Raises:
        ConfigError: naming the profile, the input and the axis.
    """
    if not profiles:
        raise ConfigError("no optimization profiles to build with", path=path)
    dynamic = {name for name, shape in onnx_inputs.items() if any(not isinstance(d, int) for d in shape)}
    for profile in profiles:
        unknown = sorted(set(profile.shapes) - set(onnx_inputs))
        if unknown:
            raise ConfigError(
                f"profile {profile.name} names inputs the ONNX graph does not have: {', '.join(unknown)}", path=path
            )
        uncovered = sorted(dynamic - set(profile.shapes))
        if uncovered:
            raise ConfigError(
                f"profile {profile.name} does not cover the dynamic inputs {', '.join(uncovered)}",
                path=path,
                hint=f"{EXPORT_MANIFEST} must list every graph input with its symbolic dims; re-run the export",
            )
        for name, rng in profile.shapes.items():
            graph_shape = tuple(onnx_inputs[name])
            if rng.rank != len(graph_shape):
                raise ConfigError(
                    f"profile {profile.name}: {name} has rank {rng.rank}, the ONNX input has rank {len(graph_shape)}",
                    path=path,
                )
            if not rng.ordered():
                raise ConfigError(f"profile {profile.name}: {name} is not min <= opt <= max ({rng})", path=path)
            if any(v < 0 for v in rng.min):
                raise ConfigError(f"profile {profile.name}: {name} has a negative dimension ({rng})", path=path)
            for axis, dim in enumerate(graph_shape):
                if isinstance(dim, int) and not rng.min[axis] == rng.opt[axis] == rng.max[axis] == dim:
                    raise ConfigError(
                        f"profile {profile.name}: {name} axis {axis} is static ({dim}) in the ONNX graph, profile gives "
                        f"{rng.min[axis]}/{rng.opt[axis]}/{rng.max[axis]}",
                        path=path,
                    )


# --------------------------------------------------------------------------------------------
# run-time selection
# --------------------------------------------------------------------------------------------


def select_profile(
    profiles: Sequence[Profile],
    shapes: Mapping[str, Sequence[int]],
    *,
    component: str | None = None,
    prefer: str | None = None,
) -> int:
    """Index of the profile to run ``shapes`` with.

    The component's preferred profile (decoder: prefill for ``sequence_length`` > 1 on an empty
    cache, append for ``sequence_length`` > 1 on a filled cache, decode for 1) is tried first, then every other profile in order.

    Raises:
        ShapeError: when no profile accepts the shapes, listing why each one does not.
    """
    if prefer is None and component in PROFILE_PREFERENCES:
        prefer = PROFILE_PREFERENCES[component](shapes)
    order = sorted(range(len(profiles)), key=lambda i: (profiles[i].name != prefer, i))
    reasons = []
    for index in order:
        why = profiles[index].violation(shapes)
        if why is None:
            return index
        reasons.append(f"{profiles[index].name}: {why}")
    given = ", ".join(f"{k}={_fmt(v)}" for k, v in shapes.items())
    raise ShapeError(
        f"no optimization profile accepts the input shapes ({given}): " + "; ".join(reasons),
        hint="rebuild the engine with wider --min-shapes/--max-shapes, or feed shapes inside the exported ranges",
    )


def _fmt(shape: Sequence[Any]) -> str:
    return "x".join(str(d) for d in shape)
