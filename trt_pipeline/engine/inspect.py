"""``autoglm-trt inspect ENGINE``: the manifest plus what the engine itself reports.

With TensorRT and a GPU the engine is loaded through the same checked path as the runner
(:func:`~trt_pipeline.runtime.tensorrt_runner.load_engine`), then asked for its I/O tensors, its
optimization profiles (``ICudaEngine.get_tensor_profile_shape``) and its layers
(``ICudaEngine.create_engine_inspector().get_engine_information(LayerInformationFormat.JSON)``;
layer details need ``ProfilingVerbosity.DETAILED``, which the builder sets). ``manifest_only=True``
reads just the manifest and works without TensorRT.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trt_pipeline.engine.manifest import EngineManifest, read_manifest
from trt_pipeline.engine.profiles import Profile, ShapeRange
from trt_pipeline.engine.tensorrt_import import TensorRTContext


@dataclass
class LayerInfo:
    name: str
    type: str | None = None
    precision: str | None = None
    tactic: str | None = None


@dataclass
class EngineReport:
    engine_path: Path
    manifest: EngineManifest
    warnings: list[str] = field(default_factory=list)
    io: list[dict[str, Any]] | None = None
    engine_profiles: list[Profile] | None = None
    layers: list[LayerInfo] | None = None
    engine_information: Any = None

    def to_json(self) -> dict[str, Any]:
        return {
            "engine": str(self.engine_path),
            "manifest": self.manifest.to_json(),
            "warnings": self.warnings,
            "io": self.io,
            "engine_profiles": [p.to_json() for p in self.engine_profiles] if self.engine_profiles is not None else None,
            "layers": [vars(layer) for layer in self.layers] if self.layers is not None else None,
        }


def parse_layer_information(text: str) -> tuple[list[LayerInfo], Any]:
    """Parse the inspector's JSON (``{"Layers": [...], "Bindings": [...]}``); layers are dicts with
    ``Name``/``LayerType``/``Outputs``/``TacticName`` at DETAILED verbosity, plain names otherwise."""
    try:
        data = json.loads(text)
    except (TypeError, ValueError):
        return [LayerInfo(name=line) for line in str(text).splitlines() if line.strip()], text
    layers = []
    for item in data.get("Layers", []) if isinstance(data, dict) else []:
        if isinstance(item, str):
            layers.append(LayerInfo(name=item))
            continue
        outputs = item.get("Outputs") or []
        precision = None
        if outputs and isinstance(outputs[0], dict):
            precision = outputs[0].get("Format/Datatype")
        layers.append(
            LayerInfo(
                name=str(item.get("Name", "?")),
                type=item.get("LayerType"),
                precision=precision,
                tactic=item.get("TacticName") or (str(item["TacticValue"]) if "TacticValue" in item else None),
            )
        )
    return layers, data


def engine_profiles(engine: Any, input_names: list[str], names: list[str]) -> list[Profile]:
    """Profiles as the engine reports them (``get_tensor_profile_shape(name, index)`` -> [min, opt, max])."""
    profiles = []
    for index in range(int(engine.num_optimization_profiles)):
        shapes = {}
        for name in input_names:
            lo, mid, hi = engine.get_tensor_profile_shape(name, index)
            shapes[name] = ShapeRange(tuple(lo), tuple(mid), tuple(hi))
        profiles.append(Profile(names[index] if index < len(names) else f"profile{index}", shapes))
    return profiles


def inspect_engine(
    engine_path: Path | str, *, manifest_only: bool = False, ctx: TensorRTContext | None = None
) -> EngineReport:
    """Manifest (always) plus I/O, profiles and layers from TensorRT (unless ``manifest_only``).

    Raises:
        EngineCompatibilityError: missing/corrupt manifest, or an engine this machine cannot load.
        TensorRTUnavailableError: no TensorRT or GPU (not raised with ``manifest_only``).
    """
    from trt_pipeline.runtime.tensorrt_runner import engine_io, load_engine

    engine_path = Path(engine_path)
    if manifest_only:
        return EngineReport(engine_path, read_manifest(engine_path))
    loaded = load_engine(engine_path, ctx=ctx)
    trt, engine, manifest = loaded.ctx.trt, loaded.engine, loaded.manifest
    io = engine_io(trt, engine)
    inputs = [t.name for t in io if t.is_input]
    reported = engine_profiles(engine, [n for n in inputs if any(n in p.shapes for p in manifest.profiles)], manifest.profile_names)
    warnings = list(loaded.warnings)
    for mine, theirs in zip(manifest.profiles, reported):
        if mine.shapes != {k: v for k, v in theirs.shapes.items() if k in mine.shapes}:
            warnings.append(f"profile {mine.name}: the engine's ranges differ from the manifest's")
    inspector = engine.create_engine_inspector()
    layers, info = parse_layer_information(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    return EngineReport(
        engine_path=engine_path,
        manifest=manifest,
        warnings=warnings,
        io=[{"name": t.name, "mode": "input" if t.is_input else "output", "dtype": t.dtype_name, "shape": list(t.shape)} for t in io],
        engine_profiles=reported,
        layers=layers,
        engine_information=info,
    )
