"""``autoglm-trt bundle OUT --target T --precision P --out BUNDLE``: the folder (and .tar) for one device.

A TensorRT target gets the export copy and the recipe to build its engines on the board
(``bundle/tensorrt_bundle.py``); an ONNX Runtime target (Android) gets what an app needs to run the
graphs as they are, with reference calls to replay on the phone (``bundle/onnxruntime_bundle.py``).
"""

from __future__ import annotations

import datetime as _dt
import json
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trt_pipeline.artifacts.atomic import atomic_output_dir
from trt_pipeline.bundle.contents import EXPORT_SUBDIR
from trt_pipeline.bundle.onnxruntime_bundle import ORT_STEPS, write_ort_bundle
from trt_pipeline.bundle.targets import BundleTarget, OrtTarget, get_target
from trt_pipeline.bundle.verify import write_sums
from trt_pipeline.errors import ConfigError
from trt_pipeline.progress import progress_bar

#: The steps of a TensorRT bundle before its sums (the progress bar's).
TENSORRT_STEPS: tuple[str, ...] = ("copy export",)


@dataclass(frozen=True)
class Bundle:
    path: Path
    tar_path: Path | None
    target: BundleTarget | OrtTarget
    precision: str
    files: tuple[str, ...]


def make_bundle(out_dir: Path | str, target_name: str, dest: Path | str, *, precision: str | None = None,
                tar: bool = True, threads: int | None = None, show_progress: bool = True) -> Bundle:
    """Write the bundle folder ``dest`` and (``tar``) ``dest.tar``.

    The folder is written in a hidden sibling and renamed onto ``dest`` when complete
    (:func:`~trt_pipeline.artifacts.atomic.atomic_output_dir`), so a failure (a refused graph, a full
    disk, an ONNX Runtime that cannot load a graph) leaves no bundle.
    ``precision``: the ONNX variant to ship (None: the target's first, fp16 for TensorRT, int4 for Android).
    ``threads``: ONNX Runtime intra-op threads for an ONNX Runtime target's reference calls (None: its default).

    Raises:
        ConfigError: unknown target/precision, ``dest`` exists, or OUT lacks the precision's ONNX.
    """
    out_dir, dest, target = Path(out_dir), Path(dest), get_target(target_name)
    precision = precision or target.precisions[0]
    if dest.exists():
        raise ConfigError(f"{dest} already exists", path=dest, hint="choose another --out or remove it")
    steps = (ORT_STEPS if isinstance(target, OrtTarget) else TENSORRT_STEPS) + ("SHA256SUMS",) + (("tar",) if tar else ())
    with progress_bar(show_progress) as progress:
        task = progress.add_task(f"bundle {target.name}", total=len(steps))

        def step(name: str) -> None:
            """Mark the start of step ``name`` (the bar counts the steps done)."""
            progress.update(task, description=f"bundle {target.name}: {name}", completed=steps.index(name))

        # a hidden sibling renamed onto dest when complete (removed on any failure), under dest's lock
        with atomic_output_dir(dest, overwrite=False, flag="--out") as folder:
            fields = _write_contents(out_dir, target, folder, precision, threads, step)
            info = {"target": target.name, "runtime": target.runtime, "precision": precision, **fields,
                    "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "source": str(out_dir)}
            (folder / "bundle.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
            step("SHA256SUMS")
            files = write_sums(folder)
        tar_path = dest.with_name(dest.name + ".tar") if tar else None
        if tar_path is not None:
            step("tar")
            with tarfile.open(tar_path, "w") as archive:
                archive.add(dest, arcname=dest.name)
        progress.update(task, completed=len(steps))
    return Bundle(dest, tar_path, target, precision, files)


def _write_contents(out_dir: Path, target: BundleTarget | OrtTarget, folder: Path, precision: str,
                    threads: int | None, step: Callable[[str], None]) -> dict[str, Any]:
    """The target kind's files in ``folder``; -> its fields of bundle.json."""
    if isinstance(target, OrtTarget):
        return write_ort_bundle(out_dir, target, folder, precision, threads=threads, step=step)
    from trt_pipeline.bundle.tensorrt_bundle import write_tensorrt_bundle

    step("copy export")
    return write_tensorrt_bundle(out_dir, target, folder, precision)


__all__ = ["EXPORT_SUBDIR", "Bundle", "make_bundle"]
