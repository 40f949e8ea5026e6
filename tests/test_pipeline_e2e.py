"""The real pipeline on the tiny checkpoint: first run, unchanged re-run, --force int8, resume.

One module-scoped output folder is carried through the tests in order (each test states what the
previous one left). Stage configs are shrunk for speed (no onnxsim / validation grid in the export,
2 held-out prompts, in-process bench); the stage logic is the real one.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

import trt_pipeline.config as config_module
from trt_pipeline.pipeline import STATE_NAME, default_stages, run_pipeline
from trt_pipeline.config.pipeline import parse_pipeline_config


def _fast_toml(checkpoint: Path, out: Path) -> dict:
    data = {
        "pipeline": {"checkpoint": str(checkpoint), "out": str(out)},
        "export": {"max_batch": 1, "max_seq": 96, "max_kv": 128, "max_image_tokens": 64,
                   "simplify": False, "validate": False},
        "bench": {"backends": ["torch", "ort-fp32", "ort-int8", "trt-fp16"], "prompt_lengths": [8], "context_lengths": [16],
                  "warmup": 1, "iterations": 2, "decode_steps": 2, "image_patches": 0, "isolate": False,
                  "bandwidth_mib": 8, "bandwidth_repeats": 1},
    }
    if hasattr(config_module, "Fp16Config"):
        data["fp16"] = {"calib_samples": 2, "heldout_samples": 2}
    if hasattr(config_module, "Int8Config"):
        data["int8"] = {"calib_samples": 4, "heldout_samples": 2}
    if hasattr(config_module, "CompareConfig"):
        # int8 of random tiny weights calibrated on 4 items: its gates are not what is tested here
        off = {f"int8.{group}.cosine": "off" for group in ("image_features", "logits", "present")}
        data["compare"] = {"max_items": 2, "max_new_tokens": 4, "torch_export": False,
                           "tolerances": {**off, "int8.tokens": "off", "int8.teacher_forced": "off"}}
    return data


def _available(summary) -> list[str]:
    return [r.name for r in summary.results if r.status not in ("unavailable", "skipped")]


@pytest.fixture(scope="module")
def run(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("pipeline") / "tiny"
    cfg = parse_pipeline_config(_fast_toml(tiny_checkpoint, out))
    first = run_pipeline(cfg, show_progress=False)
    return cfg, out, first


def test_first_run_executes_every_available_stage(run):
    cfg, out, first = run
    available = _available(first)
    assert first.ran == available and {"export", "bench", "report"} <= set(available)
    assert "checkpoint" not in available  # a checkpoint was given
    statuses = {r.name: r.status for r in first.results}
    build = next(r for r in first.results if r.name == "build")
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        assert build.status == "unavailable" and "TensorRT" in build.reason
    state = json.loads((out / STATE_NAME).read_text())
    for name in available:
        record = state["stages"][name]
        assert record["status"] == "done" and len(record["key"]) == 64 and record["outputs"]
        for rel, digest in record["outputs"].items():
            assert (out / rel).is_file() and len(digest) == 64
    for precision in ("fp16", "int8"):
        if statuses.get(precision) == "ran":
            assert (out / "onnx" / precision / "decoder.onnx").is_file()
    bench = json.loads((out / "reports" / "bench.json").read_text())
    assert bench["backends"]["trt-fp16"]["status"] == "skipped"
    assert {"p50_ms", "p90_ms", "p99_ms"} <= set(bench["backends"]["ort-fp32"]["decode"][0])
    report = (out / "reports" / "REPORT.md").read_text()
    for section in ("## Pipeline stages", "## Artifacts", "## Export", "## Benchmark", "bench.png"):
        assert section in report
    assert "`onnx/fp32/decoder.onnx`" in report and "`reports/bench.json`" in report
    if statuses.get("compare") == "ran":
        assert "## Comparison with the PyTorch reference" in report
    assert not (out / ".work").exists() and not (out / ".pipeline.lock").exists()


def test_second_run_skips_every_stage(run):
    cfg, out, first = run
    second = run_pipeline(cfg, show_progress=False)
    assert second.ran == []
    assert second.up_to_date == _available(first)


def test_force_int8_reruns_int8_and_every_stage_after_it(run):
    cfg, out, first = run
    forced = run_pipeline(dataclasses.replace(cfg, force="int8"), show_progress=False)
    available = _available(first)
    after = available[available.index("int8"):] if "int8" in available else [s for s in ("compare", "bench", "report") if s in available]
    assert forced.ran == after
    assert set(forced.up_to_date) == set(available) - set(after)
    assert all("forced" in r.reason for r in forced.results if r.status == "ran")


def test_interrupted_stage_leaves_no_corrupt_artifact_and_next_run_resumes_there(run):
    from trt_pipeline.artifacts import atomic_path

    cfg, out, first = run
    bench_json = out / "reports" / "bench.json"
    before = bench_json.read_bytes()

    def interrupted_bench(ctx):
        with atomic_path(bench_json) as tmp:
            tmp.write_text('{"backends": {"ort-fp32": {"prefill": [')  # half-written
            raise KeyboardInterrupt

    stages = [dataclasses.replace(s, run=interrupted_bench) if s.name == "bench" else s for s in default_stages()]
    cfg2 = dataclasses.replace(cfg, bench=dataclasses.replace(cfg.bench, decode_steps=3))  # bench must re-run
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(cfg2, show_progress=False, stages=stages)
    assert bench_json.read_bytes() == before  # the old, complete file; never the half-written one
    json.loads(bench_json.read_text())
    assert not list(out.rglob("*.tmp")) and not (out / ".pipeline.lock").exists()
    state = json.loads((out / STATE_NAME).read_text())
    assert state["stages"]["bench"]["status"] == "interrupted"

    resumed = run_pipeline(cfg2, show_progress=False)
    assert resumed.ran == ["bench", "report"]
    assert "interrupted" in next(r.reason for r in resumed.results if r.name == "bench")
    assert json.loads(bench_json.read_text())["config"]["decode_steps"] == 3
    assert run_pipeline(cfg2, show_progress=False).ran == []


def test_cli_prints_where_the_report_is(run, tmp_path):
    from typer.testing import CliRunner

    from trt_pipeline.cli import app

    cfg, out, first = run
    toml = tmp_path / "pipeline.toml"
    data = _fast_toml(cfg.checkpoint, out)
    data["bench"]["decode_steps"] = 3  # as the previous test left it
    lines = []
    for section, table in data.items():
        lines.append(f"[{section}]")
        for key, value in table.items():
            if isinstance(value, dict):
                continue
            lines.append(f"{key} = {json.dumps(value)}")
        for key, value in table.items():
            if isinstance(value, dict):
                lines.append(f"[{section}.{key}]")
                lines += [f"{json.dumps(k)} = {json.dumps(v)}" for k, v in value.items()]
    toml.write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(app, ["pipeline", "--config", str(toml), "--no-progress", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.index("{"):])
    assert summary["report"] == str(out / "reports" / "REPORT.md")
    assert all(s["status"] in ("up-to-date", "unavailable", "skipped") for s in summary["stages"])
