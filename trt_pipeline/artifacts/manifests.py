"""Typed manifests: ``export.json`` and ``onnx/PRECISION/manifest.json`` are parsed here and only here.

:func:`read_export_manifest` turns ``OUT/export.json`` into an :class:`ExportManifest`: the
checkpoint it came from, the symbolic dims (min/opt/max and, for derived dims, the expression),
and per component its file, hashes and I/O specs. Every reader (validate, precision, calibration,
compare, bench, generate, build) uses it, so a missing, empty, corrupt or stale manifest gets the
same :class:`~trt_pipeline.errors.OnnxModelError` naming the file, never a ``KeyError``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trt_pipeline.artifacts.hashing import FileDigest, verify_file
from trt_pipeline.artifacts.layout import EXPORT_MANIFEST, OutputLayout
from trt_pipeline.config import DimRange
from trt_pipeline.errors import OnnxModelError

#: Version of the export.json schema written by the exporter; another value is a stale manifest.
EXPORT_FORMAT_VERSION = 1

Dim = int | str
REEXPORT_HINT = "re-run `autoglm-trt export CHECKPOINT --out DIR` to regenerate it."


# --------------------------------------------------------------------------------------------
# dims and tensor specs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DimSpec:
    """One symbolic axis from ``export.json`` ``dims``: ``min <= opt <= max`` and an optional ``expr``."""

    name: str
    min: int
    opt: int
    max: int
    expr: str | None = None

    @property
    def derived(self) -> bool:
        return self.expr is not None

    def value(self, kind: str) -> int:
        return int(getattr(self, kind))

    def to_range(self) -> DimRange:
        return DimRange(self.min, self.opt, self.max)


@dataclass(frozen=True)
class TensorSpec:
    """One graph input/output as listed in ``export.json`` / the precision manifest."""

    name: str
    dtype: str
    shape: tuple[Dim, ...]

    @property
    def dynamic(self) -> bool:
        return any(not isinstance(d, int) for d in self.shape)


def parse_dims(dims: Mapping[str, Any], *, source: Path | str | None = None) -> dict[str, DimSpec]:
    """``export.json`` ``dims`` -> :class:`DimSpec` per name, checking ``0 <= min <= opt <= max``."""
    name_of = Path(source).name if source is not None else EXPORT_MANIFEST
    out: dict[str, DimSpec] = {}
    for name, spec in dims.items():
        try:
            expr = spec.get("expr")
            dim = DimSpec(name=name, min=int(spec["min"]), opt=int(spec["opt"]), max=int(spec["max"]),
                          expr=None if expr is None else str(expr))
        except (AttributeError, KeyError, TypeError, ValueError):
            raise OnnxModelError(
                f"{name_of} dim {name!r} needs integer min/opt/max, got {spec!r}", path=source, hint=REEXPORT_HINT,
            ) from None
        if not 0 <= dim.min <= dim.opt <= dim.max:
            raise OnnxModelError(
                f"{name_of} dim {name!r} is not 0 <= min <= opt <= max: {dim.min}/{dim.opt}/{dim.max}",
                path=source, hint=REEXPORT_HINT,
            )
        out[name] = dim
    return out


def parse_tensor_specs(items: Sequence[Mapping[str, Any]]) -> tuple[TensorSpec, ...]:
    """``[{"name", "dtype", "shape"}]`` -> :class:`TensorSpec` tuple (ints stay ints, names stay names)."""
    specs = []
    for item in items:
        shape = tuple(int(d) if isinstance(d, int) or (isinstance(d, str) and d.isdigit()) else str(d) for d in item["shape"])
        specs.append(TensorSpec(name=str(item["name"]), dtype=str(item.get("dtype", "")), shape=shape))
    return tuple(specs)


# --------------------------------------------------------------------------------------------
# component entries (export.json and precision manifests share the shape)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ComponentEntry:
    """One component of a manifest: its ONNX file (absolute), external weights and I/O."""

    name: str
    path: Path
    digest: FileDigest | None
    external_data: Path | None
    external_digest: FileDigest | None
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def verify(self, manifest: Path | str | None = None) -> None:
        """:func:`verify_file` on the ONNX file and its external weights (sha256 + size)."""
        verify_file(self.path, self.digest or FileDigest(""), manifest=manifest)
        if self.external_data is not None:
            verify_file(self.external_data, self.external_digest or FileDigest(""), manifest=manifest)


def _digest(entry: Mapping[str, Any], prefix: str) -> FileDigest | None:
    sha = entry.get(f"{prefix}sha256")
    if not sha:
        return None
    size = entry.get(f"{prefix}size")
    return FileDigest(str(sha), int(size) if size is not None else None)


def _component(name: str, entry: Any, folder: Path, source: Path) -> ComponentEntry:
    """Parse one ``components`` entry; ``file`` is relative to ``folder``."""
    if not isinstance(entry, Mapping) or not isinstance(entry.get("file"), str):
        raise OnnxModelError(f"{source}: component {name!r} has no 'file' entry.", path=source, hint=REEXPORT_HINT)
    path = folder / entry["file"]
    external = entry.get("external_data")
    try:
        inputs = parse_tensor_specs(entry.get("inputs") or [])
        outputs = parse_tensor_specs(entry.get("outputs") or [])
    except (KeyError, TypeError, ValueError):
        raise OnnxModelError(f"{source}: component {name!r} has malformed inputs/outputs.", path=source,
                             hint=REEXPORT_HINT) from None
    return ComponentEntry(
        name=name, path=path, digest=_digest(entry, ""),
        external_data=path.with_name(external) if external else None,
        external_digest=_digest(entry, "external_data_"), inputs=inputs, outputs=outputs, raw=entry,
    )


def _load_json_object(path: Path, what: str, hint: str) -> dict[str, Any]:
    """The JSON object in ``path``; missing, empty and corrupt files raise OnnxModelError naming it."""
    if not path.is_file():
        raise OnnxModelError(f"{path} not found: {path.parent} is not {what}.", path=path, hint=hint)
    text = path.read_text(encoding="utf-8", errors="replace")
    if not text.strip():
        raise OnnxModelError(f"{path} is empty (an interrupted write?).", path=path, hint=hint)
    try:
        data = json.loads(text)
    except ValueError as error:
        raise OnnxModelError(f"{path} is not valid JSON ({error}).", path=path, hint=hint) from None
    if not isinstance(data, dict):
        raise OnnxModelError(f"{path} holds a JSON {type(data).__name__}, expected an object.", path=path, hint=hint)
    return data


# --------------------------------------------------------------------------------------------
# export.json
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportManifest:
    """``OUT/export.json``, typed. ``raw`` keeps the full JSON for reports."""

    path: Path
    format_version: int
    model_type: str
    #: the checkpoint the export was made from (None when the manifest does not name one)
    checkpoint_path: Path | None
    checkpoint_sha256: str
    checkpoint_dims: Mapping[str, Any]
    opset: int | None
    dims: Mapping[str, DimSpec]
    components: Mapping[str, ComponentEntry]
    files: Mapping[str, FileDigest]
    timings_s: Mapping[str, float]
    raw: Mapping[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @property
    def layout(self) -> OutputLayout:
        return OutputLayout(self.path.parent)

    @property
    def decoder_ops(self) -> str:
        """The decoder graph's flavour (``--decoder-ops``; exports made before it existed: portable)."""
        return str((self.raw.get("decoder_graph") or {}).get("ops", "portable"))

    @property
    def vision_ops(self) -> str:
        """The vision encoder graph's flavour (``--vision-ops``; exports made before it existed: portable)."""
        return str((self.raw.get("vision_graph") or {}).get("ops", "portable"))

    @property
    def kv_cache(self) -> str:
        """The decoder's KV-cache contract (``--kv-cache``: concat, inplace or shared; exports before it existed: concat)."""
        kind = (self.raw.get("decoder_graph") or {}).get("kv_cache")
        return kind if kind in ("inplace", "shared") else "concat"

    @property
    def kv_free_rows(self) -> bool:
        """Whether the decoder takes an ``inplace`` / ``shared`` cache longer than its attended rows (the write
        position comes from ``attention_mask``; inplace exports made before that: False, fed exactly)."""
        return self.kv_cache != "concat" and (self.raw.get("decoder_graph") or {}).get("kv_cache_free_rows") is True

    @property
    def precision(self) -> str:
        """The precision folder the export wrote (``fp32``, or ``bf16``/``fp16`` for a same-dtype export)."""
        return str(self.raw.get("precision", "fp32"))

    @property
    def workload(self) -> Mapping[str, Any]:
        """The ``workload`` section: name, per-dim sources, profile opt values, ``max_pixels``."""
        section = self.raw.get("workload") or {}
        if not isinstance(section, Mapping):
            raise OnnxModelError(f"{self.path}: 'workload' must be an object, got {section!r}.", path=self.path,
                                 hint="re-run `autoglm-trt export` to regenerate it.")
        return section

    @property
    def max_pixels(self) -> int | None:
        """Pixels (h x w) of the largest image the export was made for; None: the processor config's."""
        value = self.workload.get("max_pixels")
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise OnnxModelError(f"{self.path}: workload.max_pixels must be a positive integer, got {value!r}.",
                                 path=self.path, hint="re-run `autoglm-trt export` to regenerate it.")
        return value

    @property
    def profile_opts(self) -> dict[str, dict[str, int]]:
        """Per TensorRT profile (prefill / append / decode), the workload's typical dim values."""
        profiles = self.workload.get("profiles") or {}
        try:
            return {str(name): {str(dim): int(v) for dim, v in dims.items()} for name, dims in profiles.items()}
        except (AttributeError, TypeError, ValueError):
            raise OnnxModelError(f"{self.path}: workload.profiles must map profile -> dim -> integer.",
                                 path=self.path, hint="re-run `autoglm-trt export` to regenerate it.") from None

    @property
    def dtype(self) -> str:
        """The torch dtype the export traced in (``float32`` unless ``--dtype`` kept another one)."""
        return str(self.raw.get("dtype", "float32"))

    @property
    def ranges(self) -> dict[str, DimRange]:
        """min/opt/max of every symbolic axis (the validation grid and the range checks use these)."""
        return {name: dim.to_range() for name, dim in self.dims.items()}

    def component(self, name: str) -> ComponentEntry:
        if name not in self.components:
            raise OnnxModelError(
                f"{self.path} has no component {name!r} (it has {', '.join(self.components) or 'none'}).",
                path=self.path, hint="re-export with --components including it.",
            )
        return self.components[name]

    def verify_file(self, path: Path | str) -> Path:
        """Check a file recorded in ``files`` (embeddings) against its sha256/size before it is loaded."""
        rel = self.layout.rel(Path(path))
        if rel not in self.files:
            raise OnnxModelError(f"{self.path} records no hash for {path}.", path=self.path, hint=REEXPORT_HINT)
        return verify_file(path, self.files[rel], manifest=self.path)


def _export_components(data: dict[str, Any], root: Path, path: Path) -> dict[str, ComponentEntry]:
    components = data.get("components")
    if not isinstance(components, dict) or not components:
        raise OnnxModelError(f"{path} lists no components.", path=path, hint=REEXPORT_HINT)
    # files are checked where they are loaded (verified_onnx): a bundle ships export.json with one precision only
    return {name: _component(name, entry, root, path) for name, entry in components.items()}


def _check_input_dims_defined(components: Mapping[str, ComponentEntry], dims: Mapping[str, DimSpec], path: Path) -> None:
    """Every symbolic axis of a component input has a range in ``dims`` (profiles and range checks need it)."""
    for name, entry in components.items():
        undefined = sorted({d for spec in entry.inputs for d in spec.shape if isinstance(d, str)} - set(dims))
        if undefined:
            raise OnnxModelError(
                f"{path}: the {name} inputs use dims {', '.join(undefined)} that 'dims' does not define.",
                path=path, hint=REEXPORT_HINT,
            )


def parse_export_manifest(data: dict[str, Any], path: Path) -> ExportManifest:
    """Validate the JSON of ``export.json`` into an :class:`ExportManifest` (errors name ``path``)."""
    version = data.get("format_version")
    if version != EXPORT_FORMAT_VERSION:
        raise OnnxModelError(
            f"{path} is stale: format_version {version!r}, this autoglm-trt reads {EXPORT_FORMAT_VERSION}.",
            path=path, hint=REEXPORT_HINT,
        )
    checkpoint = data.get("checkpoint") or {}
    dims = data.get("dims")
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("path", ""), str):
        raise OnnxModelError(f"{path}: 'checkpoint' must be an object with a 'path' string.", path=path, hint=REEXPORT_HINT)
    if not isinstance(dims, dict) or not dims:
        raise OnnxModelError(f"{path} has no 'dims' (symbolic axis ranges).", path=path, hint=REEXPORT_HINT)
    files = data.get("files") or {}
    parsed_dims = parse_dims(dims, source=path)
    components = _export_components(data, path.parent, path)
    _check_input_dims_defined(components, parsed_dims, path)
    return ExportManifest(
        path=path,
        format_version=int(version),
        model_type=str(data.get("model_type", "")),
        checkpoint_path=Path(checkpoint["path"]) if checkpoint.get("path") else None,
        checkpoint_sha256=str(checkpoint.get("sha256", "")),
        checkpoint_dims=checkpoint.get("dims") or {},
        opset=data.get("opset"),
        dims=parsed_dims,
        components=components,
        files={rel: FileDigest(str(v["sha256"]), v.get("size")) for rel, v in files.items() if isinstance(v, dict)},
        timings_s=data.get("timings_s") or {},
        raw=data,
    )


def read_export_manifest(out: Path | str) -> ExportManifest:
    """Load and check ``OUT/export.json``.

    Raises:
        OnnxModelError: the file is missing (not an export folder), empty, not JSON, of another
            format version, lacks dims/components, or names ONNX files that no longer exist.
    """
    path = OutputLayout(out).export_manifest
    hint = "run `autoglm-trt export CHECKPOINT --out DIR` first."
    data = _load_json_object(path, "an export folder", hint)
    try:
        return parse_export_manifest(data, path)
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as error:
        # a hand-edited or foreign value the checks above do not name (a files entry without sha256,
        # an infinite dim, a number for external_data): still the file's fault, never a traceback
        raise OnnxModelError(f"{path} is malformed ({type(error).__name__}: {error}).", path=path,
                             hint=REEXPORT_HINT) from None


# --------------------------------------------------------------------------------------------
# onnx/PRECISION/manifest.json
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PrecisionManifest:
    """``OUT/onnx/PRECISION/manifest.json``: the files of one precision variant and their hashes."""

    path: Path
    precision: str
    components: Mapping[str, ComponentEntry]
    raw: Mapping[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @property
    def folder(self) -> Path:
        return self.path.parent

    def component(self, name: str) -> ComponentEntry:
        if name not in self.components:
            raise OnnxModelError(f"{self.path} does not list component {name!r}.", path=self.path,
                                 hint=f"re-run the stage that wrote {self.folder}.")
        return self.components[name]


def producer_hint(out: Path | str, precision: str) -> str:
    """What to run to (re)create ``OUT/onnx/PRECISION``."""
    if precision == "fp32":
        return f"run `autoglm-trt export CHECKPOINT --out {out}` first."
    return f"run `autoglm-trt precision {precision} {out}` first."


def read_precision_manifest(out: Path | str, precision: str) -> PrecisionManifest:
    """Load ``OUT/onnx/PRECISION/manifest.json`` (missing/empty/corrupt -> OnnxModelError naming it)."""
    path = OutputLayout(out).precision_manifest(precision)
    data = _load_json_object(path, f"a {precision} ONNX folder", producer_hint(out, precision))
    components = data.get("components")
    if not isinstance(components, dict):
        raise OnnxModelError(f"{path} lists no components.", path=path, hint=producer_hint(out, precision))
    return PrecisionManifest(
        path=path, precision=str(data.get("precision", precision)),
        components={name: _component(name, entry, path.parent, path) for name, entry in components.items()},
        raw=data,
    )


def verified_onnx(out: Path | str, precision: str, component: str, *, verify: bool = True) -> Path:
    """``OUT/onnx/PRECISION/COMPONENT.onnx`` after checking it (and its weights) against the manifest.

    This is what loaders call before handing an ONNX file to a runtime (issue 17: integrity before use).

    Raises:
        OnnxModelError: the file or its manifest is missing.
        ArtifactIntegrityError: size or sha256 differ from the manifest (an edited initializer, a truncated copy).
    """
    layout = OutputLayout(out)
    path = layout.onnx_path(precision, component)
    if not path.is_file():
        raise OnnxModelError(f"{path} not found.", path=path, hint=producer_hint(out, precision))
    if verify:
        manifest = read_precision_manifest(out, precision)
        manifest.component(component).verify(manifest.path)
    return path


__all__ = [
    "EXPORT_FORMAT_VERSION",
    "ComponentEntry",
    "DimSpec",
    "ExportManifest",
    "PrecisionManifest",
    "TensorSpec",
    "parse_dims",
    "parse_export_manifest",
    "parse_tensor_specs",
    "producer_hint",
    "read_export_manifest",
    "read_precision_manifest",
    "verified_onnx",
]
