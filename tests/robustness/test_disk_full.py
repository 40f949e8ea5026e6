"""A disk that fills up mid-write: exit 8, the partial output removed, earlier artifacts intact.

A real full disk, not a mock: the export is copied into a small tmpfs (root can mount one; the
test skips elsewhere), which is then shrunk so that ``precision fp16`` runs out of space while it
writes its ONNX. The free-space estimate cannot see this coming (it passed), which is the case
issue 17 names.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trt_pipeline.cli import app
from tests.robustness.robustness_workspace import fingerprint


def _mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True).returncode == 0


@pytest.fixture()
def small_disk(tmp_path: Path):
    mount = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    if not _mount_tmpfs(mount, "64m"):
        pytest.skip("needs root to mount a tmpfs (a real full disk); not available here")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _used(path: Path) -> int:
    stats = os.statvfs(path)
    return (stats.f_blocks - stats.f_bfree) * stats.f_frsize


def test_precision_on_a_full_disk_exits_8_and_keeps_the_export(compare_export: Path, small_disk: Path) -> None:
    export = small_disk / "export"
    shutil.copytree(compare_export, export)
    for stale in export.rglob("fp16"):  # the fixture may carry variants: start from fp32 only
        shutil.rmtree(stale, ignore_errors=True)
    fp32_bytes = sum(p.stat().st_size for p in (export / "onnx" / "fp32").rglob("*") if p.is_file())
    limit = _used(small_disk) + fp32_bytes // 4  # room for half of the fp16 variant at most
    subprocess.run(["mount", "-o", f"remount,size={limit}", str(small_disk)], check=True)
    before = fingerprint(export)

    result = CliRunner().invoke(app, ["precision", "fp16", str(export)])

    assert result.exit_code == 8, result.output
    assert "Traceback" not in result.output and "disk" in result.output.lower()
    assert fingerprint(export) == before  # earlier artifacts intact, no partial fp16 left behind
    assert not [p for p in small_disk.rglob("*") if p.name.endswith(".partial") or ".tmp" in p.name]
