"""Every path under an output folder ``OUT``, in one place (docs/artifacts.md).

No other module spells ``onnx/...``, ``export.json`` or ``COMPONENT.PRECISION.engine``: they ask an
:class:`OutputLayout`. A change of the artifact layout is then a change of this file, and a test
(``tests/artifacts/test_layout_literals.py``) fails when a path piece is spelled anywhere else.

::

    OUT/
      export.json                         export manifest (artifacts.manifests.ExportManifest)
      hf/                                 config, tokenizer, chat template, processor config
                                          (the built-in checkpoint of a pipeline run lives here, weights included)
      embeddings/embed_tokens.safetensors, embeddings/vision_pos_embed.safetensors
      onnx/PRECISION/COMPONENT.onnx (+ COMPONENT.onnx.data), manifest.json, accuracy.json
      onnx/int8/calibration.cache, onnx/int8/COMPONENT.calibration.cache
      engines/COMPONENT.PRECISION.engine (+ .engine.json manifest), timing.cache
      reports/  validation.json, compare.*, bench.*, REPORT.md
      pipeline_state.json, .pipeline.lock, .work/   (pipeline only)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

EXPORT_MANIFEST = "export.json"
PRECISION_MANIFEST = "manifest.json"
ACCURACY_REPORT = "accuracy.json"
CHECKPOINT_MANIFEST = "trt_pipeline_checkpoint.json"
PIPELINE_STATE = "pipeline_state.json"
PIPELINE_LOCK = ".pipeline.lock"
WORK_DIR = ".work"
HF_DIR = "hf"
EMBEDDINGS_DIR = "embeddings"
ONNX_DIR = "onnx"
ENGINES_DIR = "engines"
REPORTS_DIR = "reports"
ONNX_SUFFIX = ".onnx"
EXTERNAL_DATA_SUFFIX = ".data"
ENGINE_SUFFIX = ".engine"
ENGINE_MANIFEST_SUFFIX = ".json"
CALIBRATION_CACHE = "calibration.cache"
TIMING_CACHE = "timing.cache"
EMBED_TOKENS = "embed_tokens.safetensors"
VISION_POS_EMBED = "vision_pos_embed.safetensors"
VALIDATION_REPORT = "validation.json"
PARTIAL_SUFFIX = ".partial"

#: Files whose presence marks a folder as written by autoglm-trt (what ``--overwrite`` may replace).
OWNERSHIP_MARKERS = (EXPORT_MANIFEST, CHECKPOINT_MANIFEST, PIPELINE_STATE, PIPELINE_LOCK)


def onnx_file_name(component: str) -> str:
    """``COMPONENT.onnx`` (same name in every precision folder)."""
    return f"{component}{ONNX_SUFFIX}"


def external_data_path(onnx_path: Path | str) -> Path:
    """``COMPONENT.onnx.data`` beside an ONNX file (its external weights, when any)."""
    onnx_path = Path(onnx_path)
    return onnx_path.with_name(onnx_path.name + EXTERNAL_DATA_SUFFIX)


def engine_file_name(component: str, precision: str) -> str:
    """``COMPONENT.PRECISION.engine``."""
    return f"{component}.{precision}{ENGINE_SUFFIX}"


def engine_manifest_path(engine: Path | str) -> Path:
    """``COMPONENT.PRECISION.engine.json`` beside an engine."""
    engine = Path(engine)
    return engine.with_name(engine.name + ENGINE_MANIFEST_SUFFIX)


def is_engine_file(path: Path | str) -> bool:
    return Path(path).name.endswith(ENGINE_SUFFIX)


def component_calibration_cache_name(component: str) -> str:
    """``COMPONENT.calibration.cache`` (complete per component)."""
    return f"{component}.{CALIBRATION_CACHE}"


@dataclass(frozen=True)
class OutputLayout:
    """The paths of one output folder. Pure path arithmetic: nothing is read or created here."""

    root: Path

    def __init__(self, root: Path | str) -> None:
        object.__setattr__(self, "root", Path(root))

    # -- manifests and state -----------------------------------------------------------------
    @property
    def export_manifest(self) -> Path:
        return self.root / EXPORT_MANIFEST

    @property
    def pipeline_state(self) -> Path:
        return self.root / PIPELINE_STATE

    @property
    def pipeline_lock(self) -> Path:
        return self.root / PIPELINE_LOCK

    @property
    def work_dir(self) -> Path:
        return self.root / WORK_DIR

    # -- checkpoint files and host tables ------------------------------------------------------
    @property
    def hf_dir(self) -> Path:
        return self.root / HF_DIR

    @property
    def embeddings_dir(self) -> Path:
        return self.root / EMBEDDINGS_DIR

    @property
    def embed_tokens(self) -> Path:
        return self.embeddings_dir / EMBED_TOKENS

    @property
    def vision_pos_embed(self) -> Path:
        return self.embeddings_dir / VISION_POS_EMBED

    # -- ONNX -----------------------------------------------------------------------------------
    @property
    def onnx_root(self) -> Path:
        return self.root / ONNX_DIR

    def onnx_dir(self, precision: str) -> Path:
        return self.onnx_root / precision

    def onnx_path(self, precision: str, component: str) -> Path:
        return self.onnx_dir(precision) / onnx_file_name(component)

    def external_data(self, precision: str, component: str) -> Path:
        return external_data_path(self.onnx_path(precision, component))

    def precision_manifest(self, precision: str) -> Path:
        return self.onnx_dir(precision) / PRECISION_MANIFEST

    def accuracy_report(self, precision: str) -> Path:
        return self.onnx_dir(precision) / ACCURACY_REPORT

    def calibration_cache(self, component: str | None = None, precision: str = "int8") -> Path:
        """The shared TensorRT 10 cache, or ``COMPONENT.calibration.cache`` when ``component`` is given."""
        name = CALIBRATION_CACHE if component is None else component_calibration_cache_name(component)
        return self.onnx_dir(precision) / name

    def precisions(self) -> list[str]:
        """Precision folders present under ``onnx/`` (hidden temporary folders excluded), sorted."""
        if not self.onnx_root.is_dir():
            return []
        return sorted(p.name for p in self.onnx_root.iterdir() if p.is_dir() and not p.name.startswith("."))

    # -- engines --------------------------------------------------------------------------------
    @property
    def engines_dir(self) -> Path:
        return self.root / ENGINES_DIR

    def engine_path(self, component: str, precision: str) -> Path:
        return self.engines_dir / engine_file_name(component, precision)

    def engine_manifest(self, component: str, precision: str) -> Path:
        return engine_manifest_path(self.engine_path(component, precision))

    def engine_glob(self, precision: str) -> str:
        """Display/glob pattern of one precision's engines (``OUT/engines/*.PRECISION.engine``)."""
        return str(self.engines_dir / engine_file_name("*", precision))

    @property
    def timing_cache(self) -> Path:
        return self.engines_dir / TIMING_CACHE

    # -- reports --------------------------------------------------------------------------------
    @property
    def reports_dir(self) -> Path:
        return self.root / REPORTS_DIR

    def report(self, name: str) -> Path:
        return self.reports_dir / name

    @property
    def validation_report(self) -> Path:
        return self.report(VALIDATION_REPORT)

    def validation_report_for(self, precision: str) -> Path:
        """``reports/validation.json`` (fp32) or ``reports/validation-PRECISION.json``."""
        if precision == "fp32":
            return self.validation_report
        stem, suffix = VALIDATION_REPORT.rsplit(".", 1)
        return self.report(f"{stem}-{precision}.{suffix}")

    # -- names relative to OUT (pipeline state keys, manifest "file" entries) ------------------
    def rel(self, path: Path | str) -> str:
        """``path`` relative to ``OUT`` as a posix string (``onnx/fp32/decoder.onnx``)."""
        return Path(path).relative_to(self.root).as_posix()

    def resolve(self, rel: str) -> Path:
        """The inverse of :meth:`rel`."""
        return self.root / rel


def engine_path(out_dir: Path | str, component: str, precision: str) -> Path:
    """``OUT/engines/COMPONENT.PRECISION.engine``: the one engine path function (component, then precision)."""
    return OutputLayout(out_dir).engine_path(component, precision)


# --------------------------------------------------------------------------------------------
# Ownership and temporary siblings (used by artifacts.atomic)
# --------------------------------------------------------------------------------------------


def _is_precision_manifest(path: Path) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "precision" in data and "components" in data


def is_our_artifact(folder: Path | str) -> bool:
    """Whether ``folder`` was written by autoglm-trt (so ``--overwrite`` may replace it).

    True for a folder carrying one of :data:`OWNERSHIP_MARKERS`, a precision folder carrying our
    ``manifest.json``, and a sub-folder (``hf/``, ``embeddings/``, ``onnx/PRECISION``, ``engines/``)
    of an export folder.
    """
    folder = Path(folder)
    if any((folder / marker).is_file() for marker in OWNERSHIP_MARKERS):
        return True
    if _is_precision_manifest(folder / PRECISION_MANIFEST):
        return True
    if folder.name in (HF_DIR, EMBEDDINGS_DIR, ENGINES_DIR, REPORTS_DIR, WORK_DIR):
        return _is_output_root(folder.parent)
    return folder.parent.name == ONNX_DIR and _is_output_root(folder.parent.parent)


def _is_output_root(folder: Path) -> bool:
    return (folder / EXPORT_MANIFEST).is_file() or (folder / PIPELINE_STATE).is_file()


def partial_prefix(target: Path | str) -> str:
    """Prefix of the hidden temporary folders that build ``target`` (``.NAME.``)."""
    return f".{Path(target).name}."


def old_path_for(target: Path | str) -> Path:
    """Hidden sibling that holds the previous ``target`` while the new one is swapped in."""
    target = Path(target)
    return target.with_name(f".{target.name}.old")


def lock_path_for(target: Path | str) -> Path:
    """Lock file serializing the writers of ``target`` (a hidden sibling, removed after use)."""
    target = Path(target)
    return target.with_name(f".{target.name}.lock")


__all__ = [
    "CALIBRATION_CACHE",
    "EXPORT_MANIFEST",
    "OWNERSHIP_MARKERS",
    "PRECISION_MANIFEST",
    "OutputLayout",
    "engine_file_name",
    "engine_manifest_path",
    "engine_path",
    "external_data_path",
    "is_engine_file",
    "is_our_artifact",
    "lock_path_for",
    "old_path_for",
    "onnx_file_name",
    "partial_prefix",
]
