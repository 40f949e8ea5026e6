"""Workspace and fingerprint helpers of the robustness suite (imported by its conftest and tests)."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from PIL import Image


def fingerprint(root: Path) -> dict[str, str]:
    """Every file (sha256) and folder under ``root``: equal fingerprints = nothing added, removed or changed."""
    out: dict[str, str] = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        out[rel] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "<dir>"
    return out


@dataclass
class Workspace:
    """A case's scratch folder plus the shared read-only checkpoint and export."""

    root: Path
    shared_checkpoint: Path
    shared_export: Path

    def path(self, name: str) -> Path:
        return self.root / name

    def write(self, name: str, text: str | bytes) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8")
        return path

    def checkpoint(self, name: str = "ck") -> Path:
        """A private copy of the tiny checkpoint (to corrupt)."""
        return Path(shutil.copytree(self.shared_checkpoint, self.root / name))

    def export(self, name: str = "export") -> Path:
        """A private copy of the tiny export (to corrupt)."""
        return Path(shutil.copytree(self.shared_export, self.root / name))

    def edit_json(self, path: Path, **changes: object) -> Path:
        data = json.loads(path.read_text(encoding="utf-8"))
        data.update(changes)
        path.write_text(json.dumps(data), encoding="utf-8")
        return path

    def user_folder(self, name: str = "mine") -> Path:
        """A folder of the user's own files (must survive every command byte for byte)."""
        folder = self.root / name
        folder.mkdir()
        (folder / "notes.txt").write_text("my notes", encoding="utf-8")
        (folder / "sub").mkdir()
        (folder / "sub" / "data.bin").write_bytes(bytes(range(256)))
        return folder

    def image(self, name: str, size: tuple[int, int] = (64, 128)) -> Path:
        path = self.root / name
        Image.new("RGB", size, (20, 120, 220)).save(path)
        return path
