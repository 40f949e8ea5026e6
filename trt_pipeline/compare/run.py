"""``compare``: every backend vs the PyTorch reference, tensor by tensor and token by token.

1. Discover the candidates (:mod:`~trt_pipeline.compare.runners`): torch-export, ONNX Runtime per
   precision folder, TensorRT engines with ``--engines``.
2. Per component, build identical inputs (:mod:`~trt_pipeline.compare.data`: held-out items plus
   profile extremes), run the reference and every candidate with Polygraphy's ``Comparator.run``
   and compare each candidate with the reference through ``Comparator.compare_accuracy`` and the
   per-precision compare functions of :mod:`~trt_pipeline.compare.tolerances`.
3. Greedy-generate ``max_new_tokens`` per held-out prompt with every backend and measure exact
   matches and first divergences against transformers (:mod:`~trt_pipeline.compare.tokens`).
4. Write the report (:mod:`~trt_pipeline.compare.report`) and raise
   :class:`~trt_pipeline.errors.AccuracyError` naming the failing outputs/backends and their
   numbers if any gate failed (the report is written first).
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

from trt_pipeline.artifacts.manifests import ExportManifest, read_export_manifest
from trt_pipeline.compare.report import POLYGRAPHY_DIR, CompareReport
from trt_pipeline.config import COMPARE_PRECISIONS, CompareConfig
from trt_pipeline.errors import AccuracyError, CheckpointError, PipelineError
from trt_pipeline.progress import console, progress_bar

def log(message: str) -> None:
    """One status line on stderr, never wrapped (CI logs are read with grep)."""
    console.print(message, highlight=False, soft_wrap=True)


#: How many failure lines the AccuracyError message lists before "... and N more".
MAX_FAILURES_IN_MESSAGE = 6


@contextlib.contextmanager
def _polygraphy_logging(verbose: bool):
    """Quiet Polygraphy unless ``verbose``: our report carries the numbers.

    ``Comparator.compare_accuracy`` formats raw-output statistics (mean, std, median, quantiles of
    both outputs) for its INFO log eagerly, whatever the log level; with logging off we also skip
    that helper (pure logging, it decides nothing), which saves a quarter of the run time.
    """
    from polygraphy.comparator import comparator as _comparator
    from polygraphy.logger import G_LOGGER

    if verbose:
        yield
        return
    original = _comparator.comp_util.log_compared_output_stats
    _comparator.comp_util.log_compared_output_stats = lambda *args, **kwargs: None
    try:
        with G_LOGGER.verbosity(G_LOGGER.CRITICAL):
            yield
    finally:
        _comparator.comp_util.log_compared_output_stats = original


def _run_component(
    component: str, loader: Any, reference_runner: Any, backends: list[Any], cfg: CompareConfig, report: CompareReport
) -> None:
    """Comparator.run over reference + candidates, then one compare_accuracy per candidate."""
    from polygraphy.comparator import Comparator
    from polygraphy.exception import PolygraphyException

    from trt_pipeline.accuracy.metrics import rms
    from trt_pipeline.compare.tolerances import compare_funcs, evaluate

    candidates = [b for b in backends if component in b.components]
    if not candidates or not len(loader):
        return
    runners = [reference_runner] + [b.runner(component) for b in candidates]
    try:
        run_results = Comparator.run(runners, data_loader=loader)
    except PolygraphyException as error:
        raise PipelineError(f"running the {component} runners failed: {str(error).strip().splitlines()[-1]}") from None
    reference_name = runners[0].name
    reference_iters = run_results[reference_name]
    outputs = list(reference_iters[0].keys()) if reference_iters else []
    scales = [{name: rms(iteration[name]) for name in outputs} for iteration in reference_iters]
    polygraphy_dir = report.report_dir / POLYGRAPHY_DIR
    polygraphy_dir.mkdir(parents=True, exist_ok=True)
    for index, backend in enumerate(candidates, start=1):
        name = runners[index].name
        gates = cfg.gates(backend.precision)
        try:
            accuracy = Comparator.compare_accuracy(
                run_results, comparisons=[(index, 0)], compare_func=compare_funcs(gates, outputs, cfg.quantile)
            )
        except PolygraphyException as error:
            raise PipelineError(f"comparing {name} failed: {str(error).strip().splitlines()[-1]}") from None
        accuracy.save(str(polygraphy_dir / f"{component}.{backend.name}.json"))
        report.tensors += evaluate(accuracy, (name, reference_name), loader.labels, gates,
                                   backend=backend.name, precision=backend.precision, component=component,
                                   scales=scales)
        for cand_iter, ref_iter in zip(run_results[name], reference_iters):
            for output in outputs:
                if output in cand_iter:
                    report.histograms.add(backend.name, output, cand_iter[output], ref_iter[output])
    del run_results


def _resolve_checkpoint(manifest: ExportManifest, cfg: CompareConfig) -> Path:
    checkpoint = Path(cfg.checkpoint) if cfg.checkpoint is not None else manifest.checkpoint_path
    if checkpoint is None or not (checkpoint / "config.json").is_file():
        raise CheckpointError(
            f"the PyTorch reference checkpoint {checkpoint} (named in {manifest.path}) is not available.",
            path=checkpoint,
            hint="pass --checkpoint with the Hugging Face checkpoint folder the export was made from.",
        )
    return checkpoint


def _discover(out_dir: Path, cfg: CompareConfig, checkpoint: Path, components: tuple[str, ...],
              verify: bool = True) -> tuple[list[Any], list[Any]]:
    """(backends, skips) of ``out_dir``; each skip is logged; no candidate at all is an error."""
    from trt_pipeline.compare.runners import DiscoveryContext, discover_backends

    backends, skips = discover_backends(DiscoveryContext(out_dir, cfg, checkpoint, components, verify=verify))
    for skip in skips:
        log(skip.line())
    if not backends:
        raise PipelineError(
            f"nothing to compare in {out_dir}: no candidate backend was found.",
            path=out_dir,
            hint="run `autoglm-trt export` (fp32 ONNX) first, or enable --torch-export.",
        )
    return backends, skips


def _new_report(
    out_dir: Path, report_dir: Path, cfg: CompareConfig, checkpoint: Path, data_dir: Path, items: int,
    backends: list[Any], skips: list[Any],
) -> CompareReport:
    """The empty report: settings, reference, backends, skips and the gates of the precisions present."""
    return CompareReport(
        out_dir=out_dir,
        report_dir=report_dir,
        config={k: (str(v) if isinstance(v, Path) else v) for k, v in cfg.to_dict().items() if k != "gates"},
        reference={"name": "transformers", "checkpoint": str(checkpoint), "data": str(data_dir), "items": items},
        backends=[b.to_dict() for b in backends],
        skipped=skips,
        gates={p: cfg.to_dict()["gates"][p] for p in COMPARE_PRECISIONS
               if any(b.precision == p for b in backends)},
    )


def _build_loaders(
    progress: Any, task: Any, components: tuple[str, ...], assets: Any, heldout: list[Any], ranges: Any,
    processing: Any, ref_vision: Any, ref_decoder: Any, cfg: CompareConfig,
) -> dict[str, Any]:
    """Per component, the identical inputs every runner gets (held-out items plus profile extremes)."""
    from trt_pipeline.compare.data import decoder_samples, vision_samples

    loaders = {}
    with ref_vision, ref_decoder:
        if "vision_encoder" in components:
            progress.update(task, description="inputs: vision_encoder")
            loaders["vision_encoder"] = vision_samples(assets, heldout, ranges, extremes=cfg.extremes, seed=cfg.seed,
                                                 processing=processing)
            progress.advance(task)
        if "decoder" in components:
            progress.update(task, description="inputs: decoder")
            loaders["decoder"] = decoder_samples(assets, heldout, ranges, ref_vision, ref_decoder,
                                                 extremes=cfg.extremes, seed=cfg.seed)
            progress.advance(task)
    return loaders


def _compare_tokens(
    progress: Any, task: Any, report: CompareReport, reference: Any, processing: Any, heldout: list[Any],
    assets: Any, backends: list[Any], components: tuple[str, ...], cfg: CompareConfig,
) -> None:
    """Greedy tokens of every complete backend vs transformers into ``report.tokens`` (or why skipped)."""
    from trt_pipeline.accuracy.tokens import TokenAgreement
    from trt_pipeline.compare.tokens import backend_tokens, reference_tokens

    report.token_settings = {"max_new_tokens": cfg.max_new_tokens, "prompts": len(heldout)}
    if not cfg.tokens:
        report.token_settings["skipped"] = "disabled (--no-tokens)"
        return
    if set(components) != {"vision_encoder", "decoder"}:
        report.token_settings["skipped"] = "the export lacks a component (needs vision_encoder and decoder)"
        return
    progress.update(task, description="tokens: transformers")
    expected = reference_tokens(reference.model, processing, heldout, cfg.max_new_tokens)
    progress.advance(task)
    ids = [h.id for h in heldout]
    for backend in backends:
        progress.update(task, description=f"tokens: {backend.name}")
        if set(backend.components) != {"vision_encoder", "decoder"}:
            report.notes.append(f"token check skipped for {backend.name}: it lacks a component")
            continue
        rows, forced = backend_tokens(assets, backend.runner("vision_encoder"), backend.runner("decoder"),
                                      processing, heldout, cfg.max_new_tokens, references=expected)
        gates = cfg.gates(backend.precision)
        report.tokens.append(TokenAgreement(backend.name, backend.precision, gates.token_exact_match,
                                            ids, expected, rows, forced, gates.token_teacher_forced))
        progress.advance(task)


def _raise_if_failed(report: CompareReport, paths: dict[str, Path]) -> None:
    """AccuracyError listing the first failing gates (the report is already written)."""
    if report.passed:
        return
    failures = report.failures
    shown = failures[:MAX_FAILURES_IN_MESSAGE]
    more = f"\n  ... and {len(failures) - len(shown)} more" if len(failures) > len(shown) else ""
    raise AccuracyError(
        f"compare failed {len(failures)} gate(s) against the PyTorch reference:\n  "
        + "\n  ".join(shown) + more,
        path=paths["markdown"],
        hint=f"see {paths['markdown']} and {paths['png']}; re-export or re-run the precision stage, or loosen "
             "a gate with --tol PRECISION.GROUP.METRIC=VALUE only if the drift is expected.",
    )


def compare(
    out_dir: Path | str, cfg: CompareConfig = CompareConfig(), show_progress: bool = True, *, verify: bool = True,
) -> CompareReport:
    """Compare every available backend of export ``out_dir`` with transformers.

    With ``verify`` (default) every ONNX file and host table is checked against its manifest
    (sha256 + size) before it is loaded.

    Returns the :class:`CompareReport` (truthy: all gates passed) after writing ``compare.json``,
    ``compare.md`` and ``compare_errors.png`` to ``cfg.report_dir`` (default ``OUT/reports``).

    Raises:
        AccuracyError: a gate failed (message names backend, output and numbers; report written).
        OnnxModelError: an explicitly requested precision folder is missing, or not an export folder.
        CheckpointError: the reference checkpoint is not available.
        CalibrationError: the held-out folder is missing or malformed.
        TensorRTUnavailableError: ``engines=True`` on a machine without TensorRT/GPU.
    """
    from trt_pipeline.compare.data import default_heldout_dir, load_heldout
    from trt_pipeline.models.glm4v.generation import HostAssets
    from trt_pipeline.models.glm4v.processing import Glm4vProcessing
    from trt_pipeline.runtime.transformers_runner import TransformersReference, transformers_component_runners

    start = time.perf_counter()
    out_dir = Path(out_dir)
    manifest = read_export_manifest(out_dir)
    layout = manifest.layout
    components = tuple(c for c in ("vision_encoder", "decoder") if c in manifest.components)
    checkpoint = _resolve_checkpoint(manifest, cfg)
    backends, skips = _discover(out_dir, cfg, checkpoint, components, verify)
    data_dir = Path(cfg.data) if cfg.data is not None else default_heldout_dir()
    report_dir = Path(cfg.report_dir) if cfg.report_dir is not None else layout.reports_dir
    ranges = manifest.ranges
    processing = Glm4vProcessing(layout.hf_dir, max_pixels=manifest.max_pixels)
    assets = HostAssets.from_export_dir(out_dir, verify=verify)
    heldout = load_heldout(processing, data_dir, cfg.max_items)
    reference = TransformersReference(checkpoint)
    report = _new_report(out_dir, report_dir, cfg, checkpoint, data_dir, len(heldout), backends, skips)
    steps = len(components) * 2 + (1 + len(backends) if cfg.tokens else 0)
    ref_vision, ref_decoder = transformers_component_runners(reference, kv_cache=manifest.kv_cache)
    with progress_bar(show_progress) as progress, _polygraphy_logging(cfg.verbose):
        task = progress.add_task("compare", total=steps)
        loaders = _build_loaders(progress, task, components, assets, heldout, ranges, processing,
                                 ref_vision, ref_decoder, cfg)
        for component, loader in loaders.items():
            report.notes += loader.notes
            report.samples[component] = [{"label": s.label, **s.dims} for s in loader.samples]
            progress.update(task, description=f"tensors: {component} ({len(loader)} samples x {len(backends) + 1} runners)")
            reference_runner = ref_vision if component == "vision_encoder" else ref_decoder
            _run_component(component, loader, reference_runner, backends, cfg, report)
            progress.advance(task)
        _compare_tokens(progress, task, report, reference, processing, heldout, assets, backends, components, cfg)
    report.seconds = time.perf_counter() - start
    paths = report.write()
    _log_summary(report)
    _raise_if_failed(report, paths)
    return report


def _log_summary(report: CompareReport) -> None:
    for backend in report.backends:
        rows = [t for t in report.tensors if t.backend == backend["name"]]
        parts = []
        for group in ("image_features", "logits", "present"):
            group_rows = [r for r in rows if r.group == group]
            if group_rows:
                parts.append(f"{group} max abs {max(r.max_abs for r in group_rows):.3g} "
                             f"cos {min(r.cosine for r in group_rows):.6f}")
        tokens = report.token_agreement(backend["name"])
        if tokens is not None:
            forced = tokens.teacher_forced_agreement
            parts.append(f"tokens {tokens.exact_matches}/{tokens.prompts}, teacher-forced "
                         + ("n/a" if forced is None else f"{forced:.1%}"))
        ok = all(r.passed for r in rows) and (tokens is None or tokens.passed)
        log(f"compare {backend['name']}: {'pass' if ok else 'FAIL'} ({'; '.join(parts)})")
    log(f"compare report: {report.files.get('markdown')}")


__all__ = ["compare"]
