"""``validate`` for any size: the whole export when it fits in memory, else its twin plus proofs.

Twin validation (:mod:`trt_pipeline.export.twin`) of ``OUT`` made from ``CHECKPOINT``:

1. write the K-layer twin checkpoint (byte ranges of the real tensors) into a work folder beside OUT;
2. export it with OUT's own export config (same workload ranges, streaming) in OUT's dtype, and
   compare OUT's graphs with the twin's layer by layer (:mod:`trt_pipeline.export.structure`);
3. hash every initializer of OUT against its checkpoint tensor;
4. export the twin in fp32 too, and compare both twin exports with transformers on real-workload
   shapes (:mod:`trt_pipeline.export.twin_numerics`): fp32 against transformers-fp32 with the fp32
   gates, their max-abs limit raised to ``3 x drift64`` where transformers' own fp32 rounding
   (transformers-fp32 vs float64, :mod:`trt_pipeline.export.float64_reference`) makes that larger;
   the export dtype against transformers in that dtype with ``max(atol, 2 x drift)``, drift
   being transformers-in-dtype against transformers-fp32 on the same inputs.

Everything is recorded in ``reports/validation[-PRECISION].json`` with ``"mode": "twin"``; the work
folder is removed afterwards unless ``keep_twin``.
"""

from __future__ import annotations

import gc
import tempfile
import time
from pathlib import Path
from typing import Any

from trt_pipeline.errors import CheckpointError, ConfigError
from trt_pipeline.export.twin import TWIN_LAYERS, plan_validation, remove_twin, write_twin_checkpoint
from trt_pipeline.export.twin_numerics import TwinShapes, compare, export_outputs, reference_outputs
from trt_pipeline.export.validate import ValidationReport, reference_dtype, validate, validation_gates, write_and_check
from trt_pipeline.progress import log

PRECISION_OF = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}


def validate_export(
    out_dir: Path | str, checkpoint: Path | str | None = None, precision: str | None = None, *, mode: str | None = None,
    atol_logits: float | None = None, atol_vision: float | None = None, show_progress: bool = True,
    verify: bool = True, twin_layers: int = TWIN_LAYERS, shapes: TwinShapes | None = None,
    keep_twin: bool = False,
) -> ValidationReport:
    """Validate ``OUT/onnx/PRECISION``: in full when it fits in memory (or ``mode="full"``), else
    (or ``mode="twin"``) on its twin. The report says which (``report.mode``, ``details.plan``).
    ``checkpoint`` and ``precision`` default to the ones export.json names (the export's source and
    its own precision)."""
    from trt_pipeline.artifacts import read_export_manifest

    out_dir = Path(out_dir)
    manifest = read_export_manifest(out_dir)
    checkpoint = Path(checkpoint) if checkpoint is not None else manifest.checkpoint_path
    if checkpoint is None:
        raise CheckpointError(f"{manifest.path} names no source checkpoint.", path=manifest.path,
                              hint="pass --checkpoint with the checkpoint folder the export was made from.")
    precision = precision or manifest.precision
    plan = plan_validation(checkpoint, reference_dtype(manifest, precision), mode, bool(manifest.raw.get("streamed")))
    log(f"validate: {plan.mode} ({plan.reason})")
    if plan.mode == "full":
        return validate(out_dir, checkpoint, precision, atol_logits, atol_vision, show_progress, verify=verify,
                        details={"plan": plan.to_dict()})
    if verify:  # the graph files; their external weights are checked tensor by tensor against the checkpoint
        from trt_pipeline.artifacts import FileDigest, verify_file

        for entry in manifest.components.values():
            verify_file(entry.path, entry.digest or FileDigest(""), manifest=manifest.path)
    return validate_twin(out_dir, checkpoint, precision, layers=twin_layers, shapes=shapes, atol_logits=atol_logits,
                         atol_vision=atol_vision, keep=keep_twin, plan=plan.to_dict())


def validate_twin(
    out_dir: Path, checkpoint: Path, precision: str, *, layers: int = TWIN_LAYERS, shapes: TwinShapes | None = None,
    atol_logits: float | None = None, atol_vision: float | None = None, keep: bool = False,
    plan: dict[str, Any] | None = None,
) -> ValidationReport:
    """Steps 1-4 of the module docstring; raises AtolError when a number or the structure is off."""
    from trt_pipeline.artifacts import read_export_manifest

    manifest = read_export_manifest(out_dir)
    if precision != manifest.precision:
        raise ConfigError(f"twin validation checks the export's own precision ({manifest.precision}), not {precision}: "
                          "a derived variant (AutoCast, INT8) would have to be made for the twin too.",
                          path=manifest.path, hint=f"validate --precision {manifest.precision}, or --full.")
    shapes = shapes or default_shapes(manifest)
    dtype = manifest.dtype
    _check_twin_disk(out_dir, checkpoint, layers, dtype)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.twin-", dir=out_dir.resolve().parent))
    timings: dict[str, float] = {}
    try:
        twin_ck, exports, checks = _twin_exports(out_dir, checkpoint, manifest, dtype, layers, work, timings)
        report = ValidationReport(precision, reference_dtype=dtype, mode="twin", backend=_backend(dtype))
        start = time.perf_counter()
        report.results = _twin_numbers(twin_ck, exports, dtype, shapes, atol_logits, atol_vision)
        timings["numerics"] = time.perf_counter() - start
    finally:
        if not keep:
            remove_twin(work)
    report.details = {"plan": plan or {}, "twin": {"layers": layers, "vision_layers": layers, "shapes": shapes.to_dict(),
                                                  "work": str(work) if keep else None, **checks,
                                                  "seconds": {k: round(v, 1) for k, v in timings.items()}}}
    report.failures = structure_failures(checks)
    write_and_check(report, out_dir, precision)
    return report


def _check_twin_disk(out_dir: Path, checkpoint: Path, layers: int, dtype: str) -> None:
    """The twin checkpoint, its export in ``dtype`` and its fp32 export go beside OUT: refuse early
    (DiskSpaceError, exit 8) when they do not fit."""
    from trt_pipeline.export.twin import twin_entries
    from trt_pipeline.export.writer import check_disk_space

    twin_bytes = sum(e.nbytes for e in twin_entries(checkpoint, layers).values())
    itemsize = {"float32": 4, "float16": 2, "bfloat16": 2}[dtype]
    check_disk_space(out_dir.resolve(), int(twin_bytes * (2 + 4 / itemsize) * 1.05))


def default_shapes(manifest: Any) -> TwinShapes:
    """The twin's shapes, clipped to the export's ranges (a tiny export's ranges are tiny)."""
    dims = manifest.ranges
    seq, past, patches = dims["sequence_length"].max, dims["past_sequence_length"].max, dims["num_patches"]
    base = TwinShapes()
    prefill = min(base.prefill, seq, max(1, past * 3 // 4))  # the decode step's past is prefill + append
    append = max(1, min(base.append, seq, past - prefill))
    vision = tuple(sorted({max(patches.min, min(p, patches.max)) for p in base.vision_patches}))
    return TwinShapes(vision_patches=vision, prefill=prefill, append=append)


def _backend(dtype: str) -> str:
    same = "torch-export modules (ORT CPU lacks bf16 kernels)" if dtype == "bfloat16" else "onnxruntime-cpu"
    return f"twin: fp32 export on onnxruntime-cpu; {dtype} export on {same}" if dtype != "float32" else "twin: onnxruntime-cpu"


def _twin_exports(out_dir: Path, checkpoint: Path, manifest: Any, dtype: str, layers: int, work: Path,
                  timings: dict[str, float]) -> tuple[Path, dict[str, Path], dict[str, Any]]:
    """Write the twin checkpoint and its exports; check OUT's structure and hashes against them."""
    from trt_pipeline.export.writer import write_export

    start = time.perf_counter()
    twin_ck = write_twin_checkpoint(checkpoint, work / "checkpoint", layers)
    timings["twin_checkpoint"] = time.perf_counter() - start
    exports = {}
    for export_dtype in dict.fromkeys([dtype, "float32"]):
        start = time.perf_counter()
        exports[export_dtype] = write_export(twin_ck, work / f"export-{PRECISION_OF[export_dtype]}",
                                             twin_export_config(manifest, export_dtype), show_progress=False)
        timings[f"twin_export_{PRECISION_OF[export_dtype]}"] = time.perf_counter() - start
        gc.collect()
    start = time.perf_counter()
    checks = structural_checks(out_dir, exports[dtype], checkpoint, manifest)
    timings["structure_and_hashes"] = time.perf_counter() - start
    return twin_ck, exports, checks


def twin_export_config(manifest: Any, dtype: str) -> Any:
    """OUT's export config for the twin: same ranges and opset, ``dtype``, streaming, no validation."""
    from trt_pipeline.config import ExportConfig

    config = dict(manifest.raw["config"])
    config["components"] = tuple(config["components"])
    # the graph flavours OUT was traced with (an export made before --vision-ops recorded none: portable)
    config.update(dtype=dtype, streaming=True, validate=False, vision_ops=manifest.vision_ops)
    return ExportConfig(**config)


def structural_checks(out_dir: Path, twin_out: Path, checkpoint: Path, manifest: Any) -> dict[str, Any]:
    """Per component: OUT's graph against the twin's (layer by layer) and OUT's initializer hashes."""
    from trt_pipeline.export.streaming import verify_initializer_hashes
    from trt_pipeline.export.structure import compare_to_twin, graph_layers

    structure, hashes = {}, {}
    for component, entry in manifest.components.items():
        full_path = entry.path
        twin_path = twin_out / entry.path.resolve().relative_to(out_dir.resolve())  # the export may be named relatively
        structure[component] = compare_to_twin(graph_layers(full_path), graph_layers(twin_path))
        hashes[component] = verify_initializer_hashes(full_path, checkpoint)
        hashes[component]["differ"] = hashes[component]["differ"][:10]
        log(f"validate (twin) {component}: {structure[component]['layers']} layers "
            f"{'identical to' if structure[component]['identical'] else 'DIFFERENT from'} the twin's; "
            f"{hashes[component]['checked']}/{hashes[component]['expected']} initializers hashed, "
            f"{'all equal' if hashes[component]['equal'] else 'MISMATCH'}")
    return {"structure": structure, "initializer_hashes": hashes}


def _twin_numbers(twin_ck: Path, exports: dict[str, Path], dtype: str, shapes: TwinShapes,
                  atol_logits: float | None, atol_vision: float | None) -> list[Any]:
    """The phases of :mod:`trt_pipeline.export.twin_numerics`, one model in memory at a time."""
    from trt_pipeline.models.glm4v.config import load_dims

    dims = load_dims(twin_ck)
    fp32_gates = validation_gates("fp32", atol_logits, atol_vision)
    reference32 = reference_outputs(twin_ck, "float32", dims, shapes)
    log("validate (twin): transformers fp32 done")
    reference64 = reference_outputs(twin_ck, "float64", dims, shapes)  # transformers' own fp32 rounding
    log("validate (twin): transformers float64 done")
    results = compare(reference32, export_outputs(exports["float32"], "fp32", "float32", twin_ck, shapes, reference32),
                      shapes, fp32_gates, "float32", drift=reference64, drift_against="float64")
    del reference64
    log("validate (twin): fp32 export done")
    if dtype != "float32":
        reference = reference_outputs(twin_ck, dtype, dims, shapes)
        log(f"validate (twin): transformers {dtype} done")
        actual = export_outputs(exports[dtype], PRECISION_OF[dtype], dtype, twin_ck, shapes, reference)
        results += compare(reference, actual, shapes, fp32_gates, dtype, drift=reference32)
    return results


def structure_failures(checks: dict[str, Any]) -> list[str]:
    """A component whose graph differs from the twin's, or whose initializers differ from the checkpoint."""
    failures = []
    for component, result in checks["structure"].items():
        if not result["identical"]:
            failures.append(f"{component}: graph differs from the twin's: {'; '.join(result['differences'][:3])}")
        hashes = checks["initializer_hashes"][component]
        if not hashes["equal"]:
            failures.append(f"{component}: {len(hashes['differ'])} initializer(s) differ from the checkpoint "
                            f"({', '.join(hashes['differ'][:3])}); {hashes['checked']}/{hashes['expected']} checked")
    return failures


__all__ = ["default_shapes", "structural_checks", "twin_export_config", "validate_export", "validate_twin"]
