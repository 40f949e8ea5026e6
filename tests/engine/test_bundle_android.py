"""`bundle --target android-arm64` on real tiny exports: the export copy, reference calls that replay on ONNX
Runtime to the recorded numbers (and fail when the graph changes), the reduced-build operator list."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from trt_pipeline.bundle.golden import REPLAY_COSINE, ReferenceMismatchError, check_replay, compare_output, replay_reference
from trt_pipeline.bundle.make import make_bundle
from trt_pipeline.bundle.onnxruntime_bundle import replay_bundle
from trt_pipeline.bundle.operators import graph_operators, required_operators
from trt_pipeline.bundle.verify import verify_bundle
from trt_pipeline.cli import app


@pytest.fixture(scope="module")
def int4_ort_export(tiny_ort_export: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The onnxruntime flavour's tiny export with an int4 decoder (RTN, fp32 activations), as a phone would get."""
    from trt_pipeline.config.int4 import Int4Config
    from trt_pipeline.quantize.precision import make_int4

    out = tmp_path_factory.mktemp("android") / "export"
    shutil.copytree(tiny_ort_export, out)
    make_int4(out, Int4Config(method="rtn", activations="fp32", block_size=16, calib_samples=2, evaluate=False,
                              components={"decoder": "int4", "vision_encoder": "fp32"}), show_progress=False)
    return out


@pytest.fixture(scope="module")
def android_bundle(int4_ort_export: Path, tmp_path_factory: pytest.TempPathFactory):
    return make_bundle(int4_ort_export, "android-arm64", tmp_path_factory.mktemp("bundles") / "phone",
                       precision="int4", threads=1)


def test_the_bundle_holds_what_an_app_needs_and_verifies(android_bundle):
    files = set(android_bundle.files)
    assert {"export/export.json", "export/onnx/int4/decoder.onnx", "export/onnx/int4/vision_encoder.onnx",
            "required_operators.config", "session_options.json", "README.md", "bundle.json",
            "reference/reference.json", "reference/screenshot.png"} <= files
    assert any(f.startswith("export/hf/") and f.endswith("tokenizer.json") for f in files)
    assert any(f.startswith("export/embeddings/") for f in files)
    assert not any("/fp32/" in f or f.endswith("build.sh") for f in files)
    assert verify_bundle(android_bundle.path) == len(files)
    info = json.loads((android_bundle.path / "bundle.json").read_text())
    assert info["runtime"] == "onnxruntime" and info["decoder_ops"] == "onnxruntime" and info["precision"] == "int4"
    assert android_bundle.tar_path is not None and android_bundle.tar_path.is_file()


def test_reference_calls_are_a_real_generation_that_replays_to_the_recorded_numbers(android_bundle):
    index = json.loads((android_bundle.path / "reference" / "reference.json").read_text())
    components = [call["component"] for call in index["calls"]]
    # the screenshot through the vision encoder, the prompt's prefill, then a decode step per further token
    assert components[0] == "vision_encoder" and components.count("vision_encoder") == 1
    assert len(index["greedy_tokens"]) == components.count("decoder")
    prefill, decode = index["calls"][1], index["calls"][-1]
    assert prefill["inputs"]["inputs_embeds"]["shape"][1] == index["prompt_tokens"]
    assert decode["inputs"]["inputs_embeds"]["shape"][1] == 1
    assert index["cosine_floor"] == REPLAY_COSINE["int4"]
    # the recorded logits pick the recorded tokens
    for call, token in zip(index["calls"][1:], index["greedy_tokens"]):
        logits = np.load(android_bundle.path / "reference" / call["outputs"]["logits"]["file"])
        assert int(logits[0, -1].argmax()) == token

    report = replay_bundle(android_bundle.path, threads=1)
    assert report.calls == len(components) and len(report.checks) >= 3
    assert all(check.passed for check in report.checks), report.checks
    assert all(check.cosine > 0.999999 and check.max_abs_error < 1e-4 for check in report.checks)
    report.raise_for_failures()


def test_a_graph_that_computes_otherwise_fails_the_replay_naming_the_call(android_bundle, tmp_path):
    """Replayed on a decoder whose logits differ (as a phone's ONNX Runtime might compute them), the check fails
    on the logits of every decoder call; the bundle's own replay refuses the changed file before running it."""
    from trt_pipeline.errors import ArtifactIntegrityError
    from trt_pipeline.runtime.onnxruntime_runner import session

    copy = tmp_path / "phone"
    shutil.copytree(android_bundle.path, copy)
    graphs = {c: copy / "export" / "onnx" / "int4" / f"{c}.onnx" for c in ("vision_encoder", "decoder")}
    model = onnx.load(str(graphs["decoder"]))
    producer = next(n for n in model.graph.node if "logits" in n.output)
    producer.output[list(producer.output).index("logits")] = "logits_raw"
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.array(-1.0, dtype=np.float32), "flip"))
    model.graph.node.append(onnx.helper.make_node("Mul", ["logits_raw", "flip"], ["logits"]))
    onnx.save(model, str(graphs["decoder"]), save_as_external_data=True, location="decoder.onnx.data")

    checks = replay_reference(copy / "reference", graphs, lambda path: session(path, threads=1))
    failed = [c for c in checks if not c.passed]
    decoder_calls = sum(c.component == "decoder" and c.output == "logits" for c in checks)
    assert len(failed) == decoder_calls >= 2
    assert all(c.output == "logits" and c.argmax_equal is False and c.cosine < 0 for c in failed)
    assert all(c.passed for c in checks if c.output != "logits")  # the KV cache and image features are untouched
    with pytest.raises(ReferenceMismatchError, match=r"call 1 \(decoder\) output logits"):
        check_replay(checks, copy / "reference")
    with pytest.raises(ArtifactIntegrityError, match="decoder.onnx"):
        replay_bundle(copy, threads=1)
    result = CliRunner().invoke(app, ["bundle", "verify", str(copy), "--run"])  # the sums catch it first
    assert result.exit_code == 3 and "decoder.onnx" in result.output


def test_verify_run_prints_the_replay_table(android_bundle):
    result = CliRunner().invoke(app, ["bundle", "verify", str(android_bundle.path), "--run", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "files match SHA256SUMS" in result.output and "reference calls match" in result.output
    assert "FAIL" not in result.output and result.output.count("same") >= 3  # a row per decoder call: same token


def test_required_operators_cover_the_graphs_and_what_onnxruntime_fuses_them_into(android_bundle):
    text = (android_bundle.path / "required_operators.config").read_text()
    lines = {line.split(";")[0] + ";" + line.split(";")[1]: set(line.split(";")[2].split(","))
             for line in text.splitlines() if line and not line.startswith("#")}
    graphs = [android_bundle.path / "export" / "onnx" / "int4" / f"{c}.onnx" for c in ("vision_encoder", "decoder")]
    for path in graphs:
        for (domain, opset), ops in graph_operators(onnx.load(str(path), load_external_data=False)).items():
            assert ops <= lines[f"{domain};{opset}"], (path.name, domain, ops - lines[f"{domain};{opset}"])
    ms = next(ops for key, ops in lines.items() if key.startswith("com.microsoft;"))
    # int4's DequantizeLinear + MatMul run as ONNX Runtime's 4-bit kernel, which the file itself does not name
    assert "MatMulNBits" in ms and {"GroupQueryAttention", "MultiHeadAttention"} <= ms
    assert required_operators(graphs, optimized=False) != required_operators(graphs)


def test_compare_output_gates_on_cosine_and_the_argmax_token():
    want = np.array([[[0.1, 2.0, -1.0, 0.5]]], dtype=np.float32)
    close = compare_output(0, "decoder", "logits", want * 1.0001, want, 0.999)
    assert close.passed and close.argmax_equal and close.max_abs_error == pytest.approx(2e-4, rel=1e-3)
    swapped = want.copy()
    swapped[0, 0, [1, 3]] = swapped[0, 0, [3, 1]] * np.array([1.0, 1.3])
    flipped = compare_output(0, "decoder", "logits", swapped, want, 0.0)
    assert not flipped.passed and flipped.argmax_equal is False  # cosine alone would pass at floor 0
    shaped = compare_output(0, "decoder", "present.0.key", want[..., :2], want, 0.9)
    assert not shaped.passed


@pytest.mark.parametrize("precision, message", [("int8", "17x slower"), ("fp16", "fp16 ONNX variant")])
def test_refusals_leave_nothing_behind(int4_ort_export, tmp_path, precision, message):
    """INT8 (TensorRT's) is refused with a hint; a precision the export lacks names what to run; no folder is left."""
    dest = tmp_path / "phone"
    result = CliRunner().invoke(app, ["bundle", str(int4_ort_export), "--target", "android-arm64",
                                      "--precision", precision, "--out", str(dest)])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_verify_run_refuses_a_tensorrt_bundle(tmp_path, make_export_dir):
    export = make_export_dir(external_data=True)
    made = make_bundle(export, "jetson-orin-jp6", tmp_path / "jetson", tar=False)
    assert made.tar_path is None and not (tmp_path / "jetson.tar").exists()
    result = CliRunner().invoke(app, ["bundle", "verify", str(made.path), "--run"])
    assert result.exit_code == 2 and "not an ONNX Runtime bundle" in result.output


def test_a_portable_fp32_export_bundles_for_the_phone_and_int4_is_the_default(tiny_export, tmp_path):
    """The standard-op graphs run on a phone too (fp32's tighter floor); without --precision a phone gets int4."""
    made = make_bundle(tiny_export, "android-arm64", tmp_path / "phone", precision="fp32", tar=False, threads=1)
    assert json.loads((made.path / "bundle.json").read_text())["decoder_ops"] == "portable"
    report = replay_bundle(made.path, threads=1)
    assert report.floor == REPLAY_COSINE["fp32"] == 0.99999
    assert report.checks and all(c.passed and c.max_abs_error < 1e-5 for c in report.checks)
    result = CliRunner().invoke(app, ["bundle", str(tiny_export), "--target", "android-arm64", "--out", str(tmp_path / "b")])
    assert result.exit_code == 2 and "int4 ONNX variant" in result.output
    assert not (tmp_path / "b").exists()


def test_an_export_without_the_vision_encoder_is_refused_naming_it(tiny_checkpoint, tmp_path):
    from trt_pipeline.config import ExportConfig
    from trt_pipeline.errors import ConfigError
    from trt_pipeline.export.exporter import export

    out = export(tiny_checkpoint, tmp_path / "export", ExportConfig(max_seq=32, max_kv=64, validate=False,
                                                                    components=("decoder",)), show_progress=False)
    with pytest.raises(ConfigError, match="holds no vision_encoder") as refused:
        make_bundle(out, "android-arm64", tmp_path / "phone", precision="fp32")
    assert "--components" in refused.value.hint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def test_the_prepacking_benchmark_times_both_sessions_on_a_reference_call(android_bundle, tmp_path):
    """benchmarks/ort_prepacking.py: a process per mode, one reference call each, checked against the recording."""
    import importlib.util

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "ort_prepacking.py"
    spec = importlib.util.spec_from_file_location("ort_prepacking", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "prepacking.json"
    assert module.main([str(android_bundle.path), "--threads", "1", "--iterations", "2", "--iterations-off", "1",
                        "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [row["prepacking"] for row in rows] == [True, False]
    assert rows[0]["vs_recorded"]["cosine"] > 0.999999 and rows[0]["vs_recorded"]["passes_floor"]
    assert len(rows[0]["call_ms_all"]) == 3 and len(rows[1]["call_ms_all"]) == 2  # + the warm-up call
    assert all(row["rss_after_load_gb"] > 0 and row["call_ms_median"] > 0 for row in rows)


def test_the_reference_screenshot_fits_the_exports_image_token_range(tiny_checkpoint, tmp_path):
    """An export that serves 64 image tokens and no fewer gets a 64-token screenshot, not the usual 32-token one."""
    from trt_pipeline.bundle.golden import screenshot_size
    from trt_pipeline.config import ExportConfig
    from trt_pipeline.export.exporter import export

    assert screenshot_size(8, 6377, 28) == (112, 224) and screenshot_size(64, 64, 28) == (224, 224)
    assert screenshot_size(1, 7, 28) == (28, 196) and screenshot_size(40, 100, 14) == (70, 112)
    out = export(tiny_checkpoint, tmp_path / "export", ExportConfig(max_seq=128, max_kv=160, min_image_tokens=64,
                                                                    max_image_tokens=64, validate=False), show_progress=False)
    made = make_bundle(out, "android-arm64", tmp_path / "phone", precision="fp32", tar=False, threads=1)
    index = json.loads((made.path / "reference" / "reference.json").read_text())
    assert index["image_tokens"] == 64
    assert all(check.passed for check in replay_bundle(made.path, threads=1).checks)
