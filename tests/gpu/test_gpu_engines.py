"""End-to-end TensorRT tests on a real GPU: build FP16 and INT8 engines of the tiny checkpoint, run them,
compare with the torch reference within the precision gates, refuse a mismatched manifest.

Skipped (with the reason) without the TensorRT wheel and a CUDA GPU; run with `make test-gpu`.
The ONNX variants come from the real stages: `export` (library call) and `autoglm-trt precision`
(CLI, as documented in the README); a missing precision stage skips the affected tests.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

pytestmark = pytest.mark.gpu

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def gpu_export(tiny_checkpoint, tmp_path_factory) -> Path:
    from trt_pipeline.config import ExportConfig
    from trt_pipeline.export.exporter import export

    out = tmp_path_factory.mktemp("gpu") / "out"
    cfg = ExportConfig(max_batch=2, max_seq=64, max_kv=96, max_image_tokens=64, validate=False)
    return export(tiny_checkpoint, out, cfg, show_progress=False)


_VARIANTS: dict[str, Path] = {}


def precision_variant(out: Path, precision: str) -> Path:
    """``OUT/onnx/PRECISION`` made by `autoglm-trt precision` (once per session)."""
    folder = out / "onnx" / precision
    if precision == "fp32" or (folder / "manifest.json").is_file():
        return folder
    from trt_pipeline.cli import app

    commands = {c.name for c in app.registered_commands}
    if "precision" not in commands:
        pytest.skip(f"the precision stage (`autoglm-trt precision {precision}`) is not available to make {folder}")
    args = ["precision", precision, str(out)]
    if precision == "int8" and (REPO / "calibration").is_dir():
        args += ["--calib", str(REPO / "calibration")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, f"`autoglm-trt {' '.join(args)}` failed:\n{result.output}"
    assert (folder / "manifest.json").is_file()
    return folder


_BUILT: dict[str, list] = {}


def built_engines(out: Path, precision: str) -> list:
    from trt_pipeline.engine.builder import build_engines
    from trt_pipeline.engine.options import BuildConfig

    if precision not in _BUILT:
        precision_variant(out, precision)
        cfg = BuildConfig(out, precision=precision, workspace=2 << 30, opt_level=3)
        _BUILT[precision] = build_engines(cfg, show_progress=False)
    return _BUILT[precision]


@pytest.fixture(scope="session")
def torch_model(tiny_checkpoint):
    from trt_pipeline.models.glm4v.model import Glm4vExportModel

    return Glm4vExportModel.from_pretrained(tiny_checkpoint, dtype="float32").eval()


def assert_within_gates(precision: str, candidate: dict, reference: dict) -> None:
    """Every output within the gate table's limits (the same metrics and thresholds as `compare`)."""
    from trt_pipeline.accuracy.gates import DEFAULT_GATES, output_group
    from trt_pipeline.accuracy.metrics import tensor_metrics

    gates = DEFAULT_GATES[precision]
    for name, ref in reference.items():
        got = np.asarray(candidate[name], dtype=np.float32)
        ref = np.asarray(ref, dtype=np.float32)
        assert got.shape == ref.shape, name
        metrics = tensor_metrics(ref, got)
        values = {"atol": metrics.max_abs, "cosine": metrics.cosine, "p99_rel": metrics.p99_rel}
        for gate in gates.output(output_group(name)).gates(name):
            assert gate.check(values[gate.metric]), f"{precision} {name}: {gate.metric} {values[gate.metric]}"


def feeds(model) -> dict:
    """Vision feed, a prefill feed (past 0) and a decode feed (past = the prefill's present)."""
    import torch

    from trt_pipeline.export.examples import vision_example
    from trt_pipeline.models.glm4v.io_spec import decoder_spec, vision_spec

    vspec, dspec = vision_spec(model.dims), decoder_spec(model.dims)
    vision = {n: t.detach().numpy() for n, t in zip(vspec.input_names, vision_example(model))}
    text = model.dims.text
    g = torch.Generator().manual_seed(0)
    b, s = 2, 7
    prefill = {
        "inputs_embeds": torch.randn(b, s, text.hidden_size, generator=g).numpy(),
        "attention_mask": np.ones((b, s), dtype=np.int64),
        "rope_cos": torch.randn(b, s, text.rotary_dim, generator=g).numpy(),
        "rope_sin": torch.randn(b, s, text.rotary_dim, generator=g).numpy(),
        "logits_positions": np.arange(s, dtype=np.int64),
    }
    for name in dspec.input_names[5:]:
        prefill[name] = np.zeros((b, text.num_key_value_heads, 0, text.head_dim), dtype=np.float32)
    return {"vision": vision, "prefill": prefill, "spec": dspec}


def decode_feed(model, prefill_out: dict, spec, new_tokens: int = 1) -> dict:
    """One step on the prefill's cache: a decode step (1 token) or an append step (chunked prefill)."""
    import torch

    text = model.dims.text
    g = torch.Generator().manual_seed(new_tokens)
    b, s = 2, new_tokens
    past_len = prefill_out["present.0.key"].shape[2]
    feed = {
        "inputs_embeds": torch.randn(b, s, text.hidden_size, generator=g).numpy(),
        "attention_mask": np.ones((b, past_len + s), dtype=np.int64),
        "rope_cos": torch.randn(b, s, text.rotary_dim, generator=g).numpy(),
        "rope_sin": torch.randn(b, s, text.rotary_dim, generator=g).numpy(),
        "logits_positions": np.arange(s, dtype=np.int64),
    }
    for past, present in zip(spec.input_names[5:], spec.output_names[1:]):
        feed[past] = np.ascontiguousarray(np.asarray(prefill_out[present], dtype=np.float32))
    return feed


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_engines_match_torch_within_the_precision_gates(precision, gpu_export, torch_model):
    import tensorrt as trt
    import torch

    from trt_pipeline.runtime.torch_runner import torch_component_runners
    from trt_pipeline.runtime.tensorrt_runner import trt_component_runners

    results = built_engines(gpu_export, precision)
    for result in results:
        manifest = result.manifest
        assert manifest.tensorrt_version == str(trt.__version__) or trt.__version__.startswith(manifest.tensorrt_version)
        assert manifest.gpu_name == torch.cuda.get_device_name(0)
        assert manifest.precision == precision and result.engine_path.stat().st_size == manifest.engine_size
    data = feeds(torch_model)
    torch_vision, torch_decoder = torch_component_runners(torch_model)
    trt_vision, trt_decoder = trt_component_runners(gpu_export, precision)
    with torch_vision, torch_decoder, trt_vision, trt_decoder:
        assert_within_gates(precision, trt_vision.infer(data["vision"]), torch_vision.infer(data["vision"]))
        ref_prefill = torch_decoder.infer(data["prefill"])
        assert_within_gates(precision, trt_decoder.infer(data["prefill"]), ref_prefill)
        decode = decode_feed(torch_model, ref_prefill, data["spec"])
        assert trt_decoder.select_profile({k: v.shape for k, v in decode.items()}) == 1  # decode profile
        assert_within_gates(precision, trt_decoder.infer(decode), torch_decoder.infer(decode))
        append = decode_feed(torch_model, ref_prefill, data["spec"], new_tokens=3)  # a chunk on a filled cache
        assert trt_decoder.select_profile({k: v.shape for k, v in append.items()}) == 2  # append profile
        assert_within_gates(precision, trt_decoder.infer(append), torch_decoder.infer(append))


def test_cuda_graph_decode_matches_plain_execution(gpu_export, torch_model):
    from trt_pipeline.runtime.tensorrt_runner import TensorRTRunner
    from trt_pipeline.runtime.torch_runner import torch_component_runners

    engine = built_engines(gpu_export, "fp16")[1].engine_path
    data = feeds(torch_model)
    _, torch_decoder = torch_component_runners(torch_model)
    with torch_decoder:
        decode = decode_feed(torch_model, torch_decoder.infer(data["prefill"]), data["spec"])
    with TensorRTRunner(engine) as plain, TensorRTRunner(engine, cuda_graph=True) as graphed:
        expected = plain.infer(decode)
        for _ in range(3):  # capture, then replays
            got = graphed.infer(decode)
            for name, value in expected.items():
                np.testing.assert_allclose(got[name], value, rtol=1e-3, atol=1e-3)
        assert len(graphed._graphs) == 1


def test_mismatched_manifest_is_refused(gpu_export, tmp_path):
    from trt_pipeline.engine.manifest import read_manifest, write_manifest
    from trt_pipeline.errors import EngineCompatibilityError
    from trt_pipeline.runtime.tensorrt_runner import TensorRTRunner

    source = built_engines(gpu_export, "fp16")[1].engine_path
    engine = tmp_path / "engines" / source.name
    engine.parent.mkdir()
    shutil.copy(source, engine)
    manifest = read_manifest(source)
    write_manifest(manifest, engine)
    with TensorRTRunner(engine):
        pass
    write_manifest(dataclasses.replace(manifest, tensorrt_version="9.9.9.9"), engine)
    with pytest.raises(EngineCompatibilityError, match="built with TensorRT 9.9.9.9"):
        TensorRTRunner(engine).activate()
    other_cc = "7.0" if manifest.compute_capability != "7.0" else "9.0"
    write_manifest(dataclasses.replace(manifest, compute_capability=other_cc), engine)
    with pytest.raises(EngineCompatibilityError, match="compute capability differs"):
        TensorRTRunner(engine).activate()


def test_timing_cache_is_written_and_reused(gpu_export):
    from trt_pipeline.engine.builder import build_engines
    from trt_pipeline.engine.options import BuildConfig

    built_engines(gpu_export, "fp16")
    cache = gpu_export / "engines" / "timing.cache"
    assert cache.is_file() and cache.stat().st_size > 0
    results = build_engines(BuildConfig(gpu_export, precision="fp16", components=("vision_encoder",)), show_progress=False)
    assert not any("timing cache" in note for note in results[0].notes)


def test_inspect_and_generate_cli(gpu_export):
    from trt_pipeline.cli import app

    results = built_engines(gpu_export, "fp16")
    runner = CliRunner()
    inspected = runner.invoke(app, ["inspect", str(results[1].engine_path), "--json"])
    assert inspected.exit_code == 0, inspected.output
    report = json.loads(inspected.stdout)
    assert report["layers"] and [p["name"] for p in report["engine_profiles"]] == ["prefill", "decode", "append"]
    generated = runner.invoke(app, ["generate", str(gpu_export), "--backend", "trt", "--precision", "fp16",
                                    "-p", "Open the settings app", "--max-new-tokens", "4", "--json"])
    assert generated.exit_code == 0, generated.output


def test_generated_trtexec_commands_build_on_this_gpu(gpu_export, tmp_path):
    """`build --print-trtexec` / bundle build.sh commands run under this TensorRT's real trtexec: every
    profile lands in the engine (the flags were checked against sampleOptions.cpp; this checks trtexec)."""
    import subprocess

    import tensorrt as trt

    from trt_pipeline.bundle.trtexec import trtexec_commands
    from trt_pipeline.engine.builder import plan_build
    from trt_pipeline.engine.options import BuildConfig
    from trt_pipeline.engine.trt_logger import process_logger

    trtexec = shutil.which("trtexec") or "/usr/src/tensorrt/bin/trtexec"
    if not Path(trtexec).is_file():
        pytest.skip("no trtexec on this machine (the NVIDIA TensorRT image has /usr/src/tensorrt/bin/trtexec)")
    precision_variant(gpu_export, "fp16")
    cfg = BuildConfig(gpu_export, precision="fp16", workspace=1 << 30, engines_dir=tmp_path / "engines",
                      timing_cache=tmp_path / "timing.cache")
    plan = plan_build(cfg)
    (tmp_path / "engines").mkdir()
    runtime = trt.Runtime(process_logger(trt))
    for component, argv in zip(plan.components, trtexec_commands(plan, cfg, tensorrt=trt.__version__.split(".")[0])):
        result = subprocess.run([trtexec, *argv[1:]], capture_output=True, text=True, timeout=1800)
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
        engine = runtime.deserialize_cuda_engine(component.engine_path.read_bytes())
        assert engine is not None and engine.num_optimization_profiles == len(component.profiles)
