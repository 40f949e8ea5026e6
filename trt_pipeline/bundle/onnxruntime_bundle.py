"""``bundle OUT --target android-arm64``: what an Android app needs to run the graphs on ONNX Runtime.

A phone builds nothing: it runs the ONNX graphs on ONNX Runtime's CPU provider. So next to the
export copy (graphs and external data of one precision, export.json with the I/O contract, the
tokenizer / chat template / image-processor config and the embedding table the host loop reads) the
bundle carries:

* ``reference/``: a real request recorded call by call on this host (``bundle/golden.py``), for the
  app's instrumented test to replay on the phone's ONNX Runtime;
* ``required_operators.config``: the operators of the graphs as ONNX Runtime runs them, for an app
  that builds a reduced ONNX Runtime (``bundle/operators.py``);
* ``session_options.json``: the session settings the reference was recorded with and the app should use;
* ``README.md``; ``bundle/make.py`` adds ``bundle.json`` and ``SHA256SUMS`` (``bundle verify``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trt_pipeline.bundle.contents import EXPORT_SUBDIR, copy_export
from trt_pipeline.bundle.golden import INDEX_FILE, REFERENCE_DIR, ReplayReport, read_index, record_reference, replay_reference
from trt_pipeline.bundle.operators import CONFIG_FILE, OPTIMIZATION_LEVEL, config_text, required_operators
from trt_pipeline.bundle.targets import OrtTarget
from trt_pipeline.errors import ConfigError

SESSION_FILE = "session_options.json"
#: The steps of an ONNX Runtime bundle before its sums (the progress bar's).
ORT_STEPS: tuple[str, ...] = ("copy export", "reference calls", "operators")
COMPONENTS = ("vision_encoder", "decoder")


def refuse_precision(target: OrtTarget, precision: str) -> None:
    """ConfigError for a precision ``target`` does not run (INT8: why, and what to bundle instead)."""
    if precision in target.precisions:
        return
    hint = ("INT8 Q/DQ graphs are made for TensorRT: ONNX Runtime's CPU provider runs them about 17x slower than "
            "fp32. For a phone, bundle int4 (`autoglm-trt precision int4 OUT`)" if precision == "int8" else
            f"bundle one of {', '.join(target.precisions)}")
    raise ConfigError(f"--precision {precision} is not offered for {target.name}", hint=hint)


def graph_paths(export_dir: Path, precision: str, *, verify: bool = True) -> dict[str, Path]:
    """The bundle's graphs; ``verify``: checked against their manifest (a missing or changed file is refused)."""
    from trt_pipeline.runtime.onnxruntime_runner import onnx_path

    return {component: onnx_path(export_dir, precision, component, verify=verify) for component in COMPONENTS}


def reference_settings(threads: int | None) -> Any:
    """The ONNX Runtime settings reference calls are recorded and replayed with (``session_options.json``)."""
    from trt_pipeline.runtime.onnxruntime_runner import OrtSettings

    return OrtSettings(intra_op_threads=threads, optimization=OPTIMIZATION_LEVEL, io_binding=False)


def session_settings(threads: int | None) -> dict[str, Any]:
    """What the app's ``OrtSession.SessionOptions`` should say (and what the reference was recorded with)."""
    return {
        "execution_provider": "CPUExecutionProvider",
        "graph_optimization_level": OPTIMIZATION_LEVEL,
        "intra_op_num_threads": threads or 0,  # 0: ONNX Runtime's default, one per big core
        "io_binding": False,
        "note": "the reference calls were recorded with these settings; required_operators.config assumes the "
                f"{OPTIMIZATION_LEVEL} optimisation level (a higher level may fuse into operators it does not list)",
    }


def write_ort_bundle(out_dir: Path, target: OrtTarget, folder: Path, precision: str, *,
                     threads: int | None = None, step: Callable[[str], None] = lambda name: None) -> dict[str, Any]:
    """Write the bundle's files into ``folder`` (see the module docstring); -> its fields of bundle.json.

    Raises:
        ConfigError: a precision the target does not run; OUT lacks a component of that precision.
        OnnxModelError: a graph differs from its manifest or ONNX Runtime cannot load it.
    """
    import onnxruntime

    from trt_pipeline.artifacts.manifests import read_export_manifest
    from trt_pipeline.engine.options import BuildConfig, resolve_build_inputs

    refuse_precision(target, precision)
    inputs = resolve_build_inputs(BuildConfig(out_dir, precision=precision))  # an export with that precision folder
    missing = [c for c in COMPONENTS if c not in inputs.components]
    if missing:
        raise ConfigError(f"{out_dir} holds no {', '.join(missing)}: a phone runs the vision encoder and the decoder, "
                          "and the bundle's reference request goes through both", path=inputs.export_path,
                          hint="export both components (the default of `autoglm-trt export`, or --components "
                               "vision_encoder,decoder)")
    graph_paths(out_dir, precision)  # refuse a missing / corrupt graph before copying gigabytes (hashed once, here)
    export = folder / EXPORT_SUBDIR
    step("copy export")
    copy_export(out_dir, export, precision)
    graphs = graph_paths(export, precision, verify=False)
    step("reference calls")
    index = record_reference(export, precision, folder / REFERENCE_DIR, reference_settings(threads), verify_graphs=False)
    sources = [path.relative_to(folder).as_posix() for path in graphs.values()]
    step("operators")
    (folder / CONFIG_FILE).write_text(config_text(required_operators(graphs.values()), sources), encoding="utf-8")
    (folder / SESSION_FILE).write_text(json.dumps(session_settings(threads), indent=2) + "\n", encoding="utf-8")
    (folder / "README.md").write_text(readme(target, precision, index, sources), encoding="utf-8")
    manifest = read_export_manifest(export)
    return {"abi": target.abi, "onnxruntime_package": target.package, "onnxruntime_min": target.onnxruntime_min,
            "onnxruntime_reference": onnxruntime.__version__, "decoder_ops": manifest.decoder_ops,
            "vision_ops": manifest.vision_ops, "reference_calls": len(index["calls"]),
            "reference_tokens": index["greedy_tokens"]}


def replay_bundle(bundle: Path | str, *, threads: int | None = None, verify: bool = True) -> ReplayReport:
    """Replay an ONNX Runtime bundle's reference calls on this host's ONNX Runtime (``bundle verify --run``).

    ``verify``: check the graphs against their manifests first (off after ``verify_bundle``, which hashed them).

    Raises:
        ConfigError: ``bundle`` is not an ONNX Runtime bundle.
    """
    import onnxruntime

    from trt_pipeline.runtime.onnxruntime_runner import session

    bundle = Path(bundle)
    info_path = bundle / "bundle.json"
    info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.is_file() else {}
    if info.get("runtime") != "onnxruntime":
        raise ConfigError(f"{bundle} is not an ONNX Runtime bundle (bundle.json runtime: {info.get('runtime')!r}): "
                          "only those carry reference calls", path=info_path,
                          hint="a TensorRT bundle is checked by building its engines on the device (build.sh)")
    reference = bundle / REFERENCE_DIR
    graphs = graph_paths(bundle / EXPORT_SUBDIR, info["precision"], verify=verify)
    settings = reference_settings(threads)
    checks = replay_reference(reference, graphs, lambda path: session(path, settings=settings))
    index = read_index(reference)
    return ReplayReport(reference, tuple(checks), len(index["calls"]), float(index["cosine_floor"]),
                        onnxruntime.__version__)


def readme(target: OrtTarget, precision: str, index: dict[str, Any], graphs: list[str]) -> str:
    from trt_pipeline.artifacts.layout import OutputLayout

    calls, layout = index["calls"], OutputLayout(EXPORT_SUBDIR)
    return f"""# autoglm-trt bundle: {target.name} ({precision})

{target.description}. ONNX Runtime >= {target.onnxruntime_min} (`{target.package}`, ABI {target.abi}).
Nothing is built on the phone: the app loads the ONNX graphs with ONNX Runtime's CPU provider.

1. Check the copy: `autoglm-trt bundle verify .` (or `sha256sum -c SHA256SUMS`); on a workstation,
   `autoglm-trt bundle verify . --run` also replays the reference calls on its ONNX Runtime.
2. Ship `{EXPORT_SUBDIR}/` with the app (external data files stay next to their `.onnx`):
   {", ".join(f"`{g}`" for g in graphs)}; `{layout.export_manifest.as_posix()}` is the I/O contract (input names,
   dynamic axes and their ranges, the KV-cache layout: `decoder_graph`); `{layout.hf_dir.as_posix()}/` holds the
   tokenizer, chat template and image-processor config; `{layout.embeddings_dir.as_posix()}/` the token-embedding
   table the host loop reads (the decoder takes `inputs_embeds`).
3. Session options: `{SESSION_FILE}` (graph optimisation level `{OPTIMIZATION_LEVEL}`; threads).
4. A reduced ONNX Runtime build (optional): `./build.sh --android --include_ops_by_config {CONFIG_FILE} ...`
   (ONNX Runtime's build script); the list includes what ONNX Runtime's optimiser fuses the graphs into.
5. On the phone, replay `{REFERENCE_DIR}/`: `{REFERENCE_DIR}/{INDEX_FILE}` lists {len(calls)} calls
   ({", ".join(c["component"] for c in calls)}), each with every input and output as a `.npy` file
   (little-endian, C order). Run each call's inputs through `session.run` and compare every output with the
   recorded one: cosine similarity >= {index["cosine_floor"]} and, for `logits`, the same arg-max token.
   End to end, the request ({index["instruction"]!r} with `{REFERENCE_DIR}/{index["image"]}`, {index["prompt_tokens"]}
   prompt tokens) generates the greedy tokens {index["greedy_tokens"]} through the app's own loop.
"""


__all__ = ["COMPONENTS", "ORT_STEPS", "SESSION_FILE", "refuse_precision", "replay_bundle", "write_ort_bundle"]
