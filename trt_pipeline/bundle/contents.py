"""What every bundle carries: a copy of the export folder with the one precision it ships."""

from __future__ import annotations

import shutil
from pathlib import Path

from trt_pipeline.artifacts.layout import OutputLayout
from trt_pipeline.engine.options import BuildConfig, resolve_build_inputs

#: The export copy inside a bundle (a TensorRT bundle's build.sh builds ``EXPORT_SUBDIR/engines``).
EXPORT_SUBDIR = "export"


def copy_export(out_dir: Path, dest: Path, precision: str) -> None:
    """Export manifest, host folders and the ONNX folder of ``precision`` (graphs, external data, caches)."""
    inputs = resolve_build_inputs(BuildConfig(out_dir, precision=precision))
    layout = OutputLayout(out_dir)  # host folders: tokenizer/chat template/processor config, embedding tables
    for source in (inputs.export_path, inputs.precision_dir, layout.hf_dir, layout.embeddings_dir):
        target = dest / source.relative_to(out_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target)
        elif source.is_file():
            shutil.copy2(source, target)


__all__ = ["EXPORT_SUBDIR", "copy_export"]
