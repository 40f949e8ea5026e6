"""Artifacts: where every file under an output folder lives, how it is written and how it is checked.

* :mod:`~trt_pipeline.artifacts.layout`: every path under ``OUT`` (:class:`OutputLayout`).
* :mod:`~trt_pipeline.artifacts.manifests`: ``export.json`` / precision manifests, typed.
* :mod:`~trt_pipeline.artifacts.atomic`: atomic writes, atomic output folders, output locks.
* :mod:`~trt_pipeline.artifacts.hashing`: sha256 helpers and :func:`verify_file`.

The names below are re-exported so ``from trt_pipeline.artifacts import ...`` keeps working.
"""

from __future__ import annotations

from trt_pipeline.artifacts.atomic import (
    atomic_output_dir,
    atomic_path,
    check_output_target,
    output_lock,
    read_json,
    remove_stale,
    tool_versions,
    write_json_atomic,
    write_text_atomic,
)
from trt_pipeline.artifacts.hashing import FileDigest, sha256_file, sha256_json, sha256_tree, verify_file
from trt_pipeline.artifacts.layout import OutputLayout, engine_path, is_our_artifact
from trt_pipeline.artifacts.manifests import (
    ExportManifest,
    PrecisionManifest,
    read_export_manifest,
    read_precision_manifest,
    verified_onnx,
)

__all__ = [
    "ExportManifest",
    "FileDigest",
    "OutputLayout",
    "PrecisionManifest",
    "atomic_output_dir",
    "atomic_path",
    "check_output_target",
    "engine_path",
    "is_our_artifact",
    "output_lock",
    "read_export_manifest",
    "read_json",
    "read_precision_manifest",
    "remove_stale",
    "sha256_file",
    "sha256_json",
    "sha256_tree",
    "tool_versions",
    "verified_onnx",
    "verify_file",
    "write_json_atomic",
    "write_text_atomic",
]
