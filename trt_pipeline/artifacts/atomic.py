"""Atomic writes that never destroy what the tool did not make.

Files go to a temporary sibling and are moved into place with :func:`os.replace`; whole output
folders are built in a hidden temporary sibling (``.NAME.XXXX.partial``) and renamed at the end
(:func:`atomic_output_dir`), so an interrupted run never leaves a half-written artifact under its
final name.

Why the extra rules (issue 17; pip, git and ``save_pretrained`` behave the same way):

* **Modes.** ``mkstemp``/``mkdtemp`` create 0600/0700 entries and a rename keeps that mode, which
  made every report and engine unreadable to other users. Written files and folders get the
  usual umask-derived mode (0644/0755 under umask 022).
* **Ownership.** An existing output folder is replaced only when it carries one of our manifests
  (:func:`trt_pipeline.artifacts.layout.is_our_artifact`); a user's folder or a file at the output
  path is refused with :class:`~trt_pipeline.errors.OutputFolderError` (exit 2).
* **One writer.** A ``filelock`` lock beside the output serializes writers of the same folder; a
  second writer fails at once naming the lock.
* **Stale leftovers.** A killed run leaves ``.NAME.*.partial`` / ``.NAME.old``; they are removed
  (under the lock) by the next write of the same output, other stale ones in the parent reported.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import stat
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from trt_pipeline.artifacts.layout import PARTIAL_SUFFIX, is_our_artifact, lock_path_for, old_path_for, partial_prefix
from trt_pipeline.errors import OutputFolderError
from trt_pipeline.progress import log

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask (read by setting and restoring it; guarded against concurrent threads)."""
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def apply_default_mode(path: Path | str, *, directory: bool = False) -> None:
    """Give ``path`` the mode a plain ``open``/``mkdir`` would have given it (0666/0777 minus umask)."""
    base = 0o777 if directory else 0o666
    os.chmod(path, base & ~current_umask())


def widen_tree_modes(root: Path | str) -> None:
    """Raise every entry under ``root`` to at least the umask-derived mode (never removes a bit).

    Libraries that write through their own temporary files (safetensors, some ONNX savers) leave
    0600; a folder published by :func:`atomic_output_dir` must be as readable as a plain write.
    Execute bits already set (a ``build.sh``) are kept.
    """
    mask = current_umask()
    root = Path(root)
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            continue
        mode = stat.S_IMODE(path.stat().st_mode)
        wanted = mode | ((0o777 if path.is_dir() else 0o666) & ~mask)
        if wanted != mode:
            os.chmod(path, wanted)


@contextlib.contextmanager
def atomic_path(target: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; move it onto ``target`` only on success.

    The moved file gets the umask-derived mode (not ``mkstemp``'s 0600).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.exists():
            apply_default_mode(tmp, directory=tmp.is_dir())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(path: Path | str, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json_atomic(path: Path | str, obj: Any) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: Path | str) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def check_output_target(target: Path | str, *, overwrite: bool = True, flag: str = "--overwrite") -> None:
    """Refuse an output path whose current content we must not replace.

    Accepted: a missing path, an empty folder, or (with ``overwrite``) a folder carrying our manifest.

    Raises:
        OutputFolderError: ``target`` is a file, a non-empty folder without our manifest, or one of
            our folders while ``overwrite`` is off.
    """
    target = Path(target)
    if target.is_symlink() and not target.exists():
        raise OutputFolderError(f"output path {target} is a broken symbolic link.", path=target,
                                hint="remove the link or choose another output path.")
    if not target.exists():
        return
    if not target.is_dir():
        raise OutputFolderError(
            f"output path {target} is an existing file, not a folder; it is left as it is.",
            path=target, hint="choose another output folder (--out) or move the file away.",
        )
    if not any(target.iterdir()):
        return
    if not is_our_artifact(target):
        raise OutputFolderError(
            f"output folder {target} already exists and is not an autoglm-trt artifact (none of our manifests in it); "
            "nothing was written and its files are left as they are.",
            path=target, hint="choose a new or empty output folder (--out); "
                              f"{flag} only replaces folders this tool wrote.",
        )
    if not overwrite:
        raise OutputFolderError(
            f"output folder {target} already holds an autoglm-trt artifact.", path=target,
            hint=f"pass {flag} to replace it, or choose another output folder.",
        )


@contextlib.contextmanager
def output_lock(target: Path | str, *, timeout: float = 0.0) -> Iterator[Path]:
    """Hold the lock of output ``target`` (``.NAME.lock`` beside it); a second writer fails clearly.

    Raises:
        OutputFolderError: another process holds the lock after ``timeout`` seconds.
    """
    from filelock import FileLock, Timeout

    lock_file = lock_path_for(target)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_file), timeout=timeout)
    try:
        lock.acquire()
    except Timeout:
        raise OutputFolderError(
            f"another autoglm-trt process is writing {target} (lock {lock_file} is held).",
            path=target, hint="wait for it to finish, or write to another output folder.",
        ) from None
    try:
        yield lock_file
    finally:
        lock.release()
        with contextlib.suppress(OSError):
            lock_file.unlink()


def remove_stale(target: Path | str, *, report: Any = None) -> list[Path]:
    """Remove ``target``'s leftovers of a killed run (``.NAME.*.partial``, ``.NAME.old``); call under its lock.

    Other writers' ``*.partial`` folders in the same parent are reported through ``report`` (a
    ``str -> None`` callable), not removed: they may belong to a run that is still going.
    """
    target = Path(target)
    parent = target.parent
    if not parent.is_dir():
        return []
    removed = []
    own = [p for p in parent.glob(f"{partial_prefix(target)}*{PARTIAL_SUFFIX}")] + [old_path_for(target)]
    for leftover in own:
        if leftover.exists():
            shutil.rmtree(leftover, ignore_errors=True) if leftover.is_dir() else leftover.unlink()
            removed.append(leftover)
    if report is not None:
        others = sorted(p for p in parent.glob(f".*{PARTIAL_SUFFIX}") if p.exists() and p not in own)
        for other in others:
            report(f"stale partial output {other} (from an interrupted run of another output); delete it if no run is active")
    return removed


def _swap_in(tmp: Path, target: Path) -> None:
    """Replace ``target`` by ``tmp`` via a hidden ``.NAME.old`` sibling (removed afterwards)."""
    if target.exists():
        old = old_path_for(target)
        if old.exists():
            shutil.rmtree(old)
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)


@contextlib.contextmanager
def atomic_output_dir(target: Path | str, *, overwrite: bool = True, flag: str = "--overwrite") -> Iterator[Path]:
    """Build a folder in a hidden temporary sibling and rename it onto ``target`` on success.

    ``target`` is checked before anything is written (:func:`check_output_target`) and again
    under the lock; stale leftovers of a killed run are removed first. On any exception the
    temporary folder is removed and ``target`` is left as it was.
    """
    target = Path(target)
    check_output_target(target, overwrite=overwrite, flag=flag)
    target.parent.mkdir(parents=True, exist_ok=True)
    with output_lock(target):
        for leftover in remove_stale(target, report=lambda line: log(f"[yellow]warning:[/] {line}")):
            log(f"removed {leftover} (left by an interrupted run)")
        check_output_target(target, overwrite=overwrite, flag=flag)
        tmp = Path(tempfile.mkdtemp(prefix=partial_prefix(target), suffix=PARTIAL_SUFFIX, dir=target.parent))
        try:
            apply_default_mode(tmp, directory=True)
            yield tmp
            widen_tree_modes(tmp)
            _swap_in(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


def tool_versions(*names: str) -> dict[str, str]:
    """Installed versions of the given distributions (plus python), for manifests."""
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


__all__ = [
    "apply_default_mode",
    "atomic_output_dir",
    "atomic_path",
    "check_output_target",
    "current_umask",
    "output_lock",
    "read_json",
    "remove_stale",
    "tool_versions",
    "widen_tree_modes",
    "write_json_atomic",
    "write_text_atomic",
]
