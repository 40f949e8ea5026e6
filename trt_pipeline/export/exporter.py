"""The export stage: write the export (:mod:`trt_pipeline.export.writer`), then validate it.

Validation runs after the writer has returned and its model, graphs and tensors are gone, so the
peak of ``export`` is the larger of the two steps', not their sum. Which validation runs (the whole
model, or its layer-truncated twin when the whole would not fit in memory) is decided by
:func:`trt_pipeline.export.twin_validate.validate_export`.
"""

from __future__ import annotations

import gc
from pathlib import Path

from trt_pipeline.config import ExportConfig
from trt_pipeline.export.writer import copy_hf_files, write_export


def export(
    checkpoint: Path | str, out: Path | str, cfg: ExportConfig = ExportConfig(), show_progress: bool = True,
    *, overwrite: bool = False,
) -> Path:
    """Export the components of a GLM-4.1V checkpoint; simplify and validate them if asked.

    Returns ``out``. Raises CheckpointError / ConfigError / DiskSpaceError / OutputFolderError
    before writing anything (``out`` may be new, empty, or, with ``overwrite``, an earlier export;
    a folder this tool did not write is never replaced), OnnxModelError if the exporter or checker
    fails, AtolError if validation fails (the folder is then complete and kept for inspection,
    with its validation report).
    """
    from trt_pipeline.artifacts import read_export_manifest
    from trt_pipeline.models.hub import resolve_checkpoint

    checkpoint = resolve_checkpoint(checkpoint)
    out = write_export(checkpoint, out, cfg, show_progress, overwrite=overwrite)
    gc.collect()  # the writer's model and graphs are unreachable now; release them before validating
    if cfg.validate:
        from trt_pipeline.export.twin_validate import validate_export

        precision = read_export_manifest(out).precision
        validate_export(out, checkpoint, precision=precision, atol_logits=cfg.atol_logits,
                        atol_vision=cfg.atol_vision, show_progress=show_progress)
    return out


__all__ = ["copy_hf_files", "export"]
