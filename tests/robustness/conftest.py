"""Fixtures of the robustness suite: one tiny checkpoint + export per session, and a workspace.

The checkpoint and export are the session fixtures of ``tests/conftest.py`` (made once, read-only).
Every case gets a :class:`Workspace`: its own folder with copies it may corrupt, and a fingerprint
of every file and folder so the test can prove a failed command left nothing behind and changed
nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from robustness_workspace import Workspace, fingerprint


@pytest.fixture()
def ws(tmp_path: Path, tiny_checkpoint: Path, compare_export: Path) -> Workspace:
    (tmp_path / "ws").mkdir()
    return Workspace(tmp_path / "ws", tiny_checkpoint, compare_export)


@pytest.fixture(scope="session")
def shared_fingerprints(tiny_checkpoint: Path, compare_export: Path) -> dict[str, dict[str, str]]:
    return {"checkpoint": fingerprint(tiny_checkpoint), "export": fingerprint(compare_export)}
