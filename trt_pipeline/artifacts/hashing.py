"""sha256 helpers and the integrity check run before an artifact is used.

Files are hashed in 1 MiB chunks so a multi-GB decoder or engine is never held in memory to be
hashed. :func:`verify_file` is what every loader (ONNX Runtime runner, validate, compare, generate)
calls before handing a file to a runtime: an ONNX whose weights were edited after export must be
refused with the file named, not run.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trt_pipeline.errors import ArtifactIntegrityError

_CHUNK = 1 << 20


def sha256_file(path: Path | str) -> str:
    """Hex sha256 of a file, streamed in 1 MiB chunks (never loads a multi-GB file)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_tree(folder: Path | str, patterns: tuple[str, ...] = ("*",)) -> str:
    """One sha256 over the relative names and contents of the files in a folder.

    Used as the identity of a checkpoint or an ONNX folder in manifests.
    """
    folder = Path(folder)
    digest = hashlib.sha256()
    files = sorted({p for pattern in patterns for p in folder.rglob(pattern) if p.is_file()})
    for file in files:
        digest.update(str(file.relative_to(folder)).encode())
        digest.update(sha256_file(file).encode())
    return digest.hexdigest()


def sha256_json(obj: Any) -> str:
    """Stable sha256 of a JSON-serialisable object (configs in stage-skip decisions)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class FileDigest:
    """What a manifest records about one file: its sha256 and (when recorded) its size in bytes."""

    sha256: str
    size: int | None = None

    @classmethod
    def of(cls, path: Path | str) -> FileDigest:
        return cls(sha256_file(path), Path(path).stat().st_size)

    def to_json(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "size": self.size}


def _expected(entry: FileDigest | Mapping[str, Any]) -> FileDigest:
    if isinstance(entry, FileDigest):
        return entry
    size = entry.get("size")
    return FileDigest(str(entry.get("sha256") or ""), int(size) if size is not None else None)


def verify_file(path: Path | str, manifest_entry: FileDigest | Mapping[str, Any], *, manifest: Path | str | None = None) -> Path:
    """Refuse ``path`` unless its size and sha256 match ``manifest_entry``; returns ``path``.

    The size is compared first (free); the sha256 is computed while streaming the file once.

    Raises:
        ArtifactIntegrityError: missing file, size or sha256 mismatch, or an entry without a sha256,
            naming the file and the manifest that records it.
    """
    path = Path(path)
    expected = _expected(manifest_entry)
    where = f" (recorded in {manifest})" if manifest is not None else ""
    hint = "the file changed after it was written; re-run the stage that wrote it (or pass --no-verify to use it anyway)."
    if not expected.sha256:
        raise ArtifactIntegrityError(f"the manifest entry of {path}{where} has no sha256 to check against.", path=path, hint=hint)
    if not path.is_file():
        raise ArtifactIntegrityError(f"{path}{where} is missing.", path=path, hint=hint)
    size = path.stat().st_size
    if expected.size is not None and size != expected.size:
        raise ArtifactIntegrityError(
            f"{path} has {size} bytes, its manifest{where} records {expected.size}: the file was modified or truncated.",
            path=path, hint=hint,
        )
    actual = sha256_file(path)
    if actual != expected.sha256:
        raise ArtifactIntegrityError(
            f"{path} does not match its manifest{where}: sha256 {actual[:12]}..., expected {expected.sha256[:12]}...",
            path=path, hint=hint,
        )
    return path


__all__ = ["FileDigest", "sha256_file", "sha256_json", "sha256_tree", "verify_file"]
