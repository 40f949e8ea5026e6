"""File hashes for the pipeline's skip decisions, cached by stat like git's index.

A stage is skipped when the sha256 of its inputs and outputs is unchanged; re-reading a 20 GB
checkpoint on every run would defeat that, so a hash is reused while the file's size, mtime and
inode are unchanged (every stage replaces files by rename, which gives a new inode).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from trt_pipeline.artifacts import sha256_file, sha256_json


class HashCache:
    """sha256 of files, cached by resolved path + (size, mtime_ns, inode); ``rehash`` re-reads each file once per run."""

    def __init__(self, entries: dict[str, list[Any]] | None = None, rehash: bool = False) -> None:
        self.entries = dict(entries or {})
        self.rehash = rehash
        self.hashed_bytes = 0
        self._fresh: set[str] = set()

    def file(self, path: Path) -> str:
        path = Path(path)
        key = str(path.resolve())
        stat = path.stat()
        signature = [stat.st_size, stat.st_mtime_ns, stat.st_ino]
        cached = self.entries.get(key)
        if cached and cached[:3] == signature and (not self.rehash or key in self._fresh):
            return cached[3]
        digest = sha256_file(path)
        self.hashed_bytes += stat.st_size
        self.entries[key] = [*signature, digest]
        self._fresh.add(key)
        return digest

    def tree(self, path: Path, base: Path | None = None) -> dict[str, str]:
        """{relative posix path: sha256} of a file or of every non-hidden file under a folder."""
        path = Path(path)
        base = base if base is not None else (path.parent if path.is_file() else path)
        if path.is_file():
            return {path.relative_to(base).as_posix(): self.file(path)}
        if not path.is_dir():
            return {}
        out = {}
        for file in sorted(path.rglob("*")):
            rel = file.relative_to(path)
            if file.is_file() and not any(part.startswith(".") for part in rel.parts):
                out[file.relative_to(base).as_posix()] = self.file(file)
        return out

    def fingerprint(self, path: Path) -> str:
        """One sha256 for a file or folder (names + contents); ``"missing"`` when absent."""
        path = Path(path)
        if not path.exists():
            return "missing"
        if path.is_file():
            return self.file(path)
        return sha256_json(self.tree(path))

    def to_json(self) -> dict[str, list[Any]]:
        return {k: v for k, v in self.entries.items() if os.path.exists(k)}

__all__ = ["HashCache"]
