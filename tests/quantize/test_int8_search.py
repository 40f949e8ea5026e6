"""precision int8 --target-token-agreement: node groups, sensitivity, the search, its manifest, an unreachable target."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest

from trt_pipeline.artifacts import read_json
from trt_pipeline.config import Int8Config
from trt_pipeline.errors import AccuracyError

TARGET = 0.95


@pytest.fixture(scope="module")
def searched_export(tiny_export: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from trt_pipeline.quantize.precision import make_int8

    out = tmp_path_factory.mktemp("int8-search") / "export"
    shutil.copytree(tiny_export, out, ignore=shutil.ignore_patterns("int8"))
    cfg = Int8Config(calib_samples=8, heldout_samples=8, components={"vision_encoder": "fp16", "decoder": "int8"},
                     target_token_agreement=TARGET, max_new_tokens=16)
    make_int8(out, cfg, show_progress=False)
    return out


def _decoder(export: Path) -> onnx.ModelProto:
    return onnx.load(str(export / "onnx" / "fp32" / "decoder.onnx"), load_external_data=False)


def test_decoder_node_groups(tiny_export: Path) -> None:
    from trt_pipeline.quantize.node_groups import node_groups, weighted_gemms

    model = _decoder(tiny_export)
    groups = node_groups(model)
    assert [g.name for g in groups] == ["layer0.attn", "layer0.mlp", "layer1.attn", "layer1.mlp", "head"]
    assert [len(g.nodes) for g in groups] == [4, 2, 4, 2, 1]  # q, k, v, o | gate_up, down | lm_head
    grouped = [n for g in groups for n in g.nodes]
    assert sorted(grouped) == sorted(n.name for n in weighted_gemms(model)) and len(set(grouped)) == len(grouped)
    head = next(n for n in model.graph.node if n.name == groups[-1].nodes[0])
    assert head.output[0] == "logits" or any(
        head.output[0] in n.input for n in model.graph.node if "logits" in n.output)


def test_sensitivity_order_holds_on_held_out_feeds(searched_export: Path) -> None:
    """The top group quantized alone errs more than the bottom one, re-measured on other (held-out) feeds."""
    from trt_pipeline.quantize.calibration_reader import CalibrationReader
    from trt_pipeline.quantize.dataset import load_split
    from trt_pipeline.quantize.int8 import quantize_int8_file
    from trt_pipeline.quantize.node_groups import node_groups
    from trt_pipeline.quantize.precision import calibration_folders
    from trt_pipeline.quantize.sensitivity import decoder_logits, excluding_all_but, kl_divergence

    search = read_json(searched_export / "onnx" / "int8" / "manifest.json")["search"]
    kls = {row["group"]: row["kl"] for row in search["sensitivity"]}
    assert search["order"] == sorted(kls, key=lambda g: -kls[g])
    top, bottom = search["order"][0], search["order"][-1]
    assert kls[top] > 3 * kls[bottom] > 0
    _, heldout_dir = calibration_folders(None)
    feeds = CalibrationReader(searched_export, load_split(heldout_dir), 8).feeds("decoder")
    src = searched_export / "onnx" / "fp32" / "decoder.onnx"
    groups = {g.name: g for g in node_groups(_decoder(searched_export))}
    reference = decoder_logits(src, feeds)
    errors = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name in (top, bottom):
            path = Path(scratch) / f"{name}.onnx"
            quantize_int8_file(src, path, feeds, method="percentile", high_precision_dtype="fp32",
                               nodes_to_exclude=excluding_all_but(list(groups.values()), [groups[name]]))
            errors[name] = np.mean([kl_divergence(r, a) for r, a in zip(reference, decoder_logits(path, feeds))])
    assert errors[top] > errors[bottom]


def test_search_reaches_the_target_with_fewest_groups(searched_export: Path) -> None:
    from trt_pipeline.quantize.calibration_reader import CalibrationReader
    from trt_pipeline.quantize.dataset import load_split
    from trt_pipeline.quantize.int8_search import HeldoutReference
    from trt_pipeline.quantize.precision import calibration_folders

    folder = searched_export / "onnx" / "int8"
    manifest = read_json(folder / "manifest.json")
    search = manifest["search"]
    tried = {int(k): v for k, v in search["tried"].items()}
    k = len(search["kept_high_precision"])
    assert search["kept_high_precision"] == search["order"][:k]
    assert tried[k] == search["teacher_forced_agreement"] >= TARGET
    assert 0 < k < len(search["order"]) and tried[0] < TARGET  # plain INT8 misses it, fp16 everywhere is not needed
    assert all(v < TARGET for j, v in tried.items() if j < k)  # every smaller k tried failed
    assert 0 < search["kept_fraction"] == k / len(search["order"]) < 1
    # the written decoder: kept groups unquantized, the others quantized
    entry = manifest["components"]["decoder"]
    kept_nodes = {n for g in search["groups"] for n in g["nodes"] if g["name"] in search["kept_high_precision"]}
    other_nodes = {n for g in search["groups"] for n in g["nodes"]} - kept_nodes
    assert not kept_nodes & set(entry["nodes_quantized"]) and other_nodes <= set(entry["nodes_quantized"])
    # re-scored independently on the published files
    _, heldout_dir = calibration_folders(None)
    reader = CalibrationReader(searched_export, load_split(heldout_dir), 8)
    reference = HeldoutReference(searched_export, reader, 16)
    scored = reference.teacher_forced(folder / "vision_encoder.onnx", folder / "decoder.onnx")
    assert scored.agreement == pytest.approx(search["teacher_forced_agreement"], abs=1e-9)
    assert scored.agreement >= TARGET and scored.steps == sum(len(t) for t in reference.tokens)


def test_search_manifest_and_chart(searched_export: Path) -> None:
    folder = searched_export / "onnx" / "int8"
    manifest = read_json(folder / "manifest.json")
    search = manifest["search"]
    assert manifest["config"]["target_token_agreement"] == TARGET
    assert search["target_token_agreement"] == TARGET
    assert {r["group"] for r in search["sensitivity"]} == set(search["order"])
    for row in search["sensitivity"]:
        assert row["kl"] > 0 and 0 < row["p99_rel"] < 10 and 0.9 < row["cosine_min"] <= 1 and row["nodes"] >= 1
    assert (folder / search["chart"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    decoder = manifest["components"]["decoder"]
    assert decoder["int8"]["calibration_seconds"] > 0 and decoder["int8"]["calibration_feeds"] >= 8
    assert search["sensitivity_seconds"] > 0 and search["search_seconds"] > 0 and "search" not in decoder


def test_unreachable_target_is_an_error_and_writes_nothing(tiny_export: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from trt_pipeline.cli.app import app

    out = tmp_path / "export"
    shutil.copytree(tiny_export, out, ignore=shutil.ignore_patterns("int8"))
    result = CliRunner().invoke(app, ["precision", "int8", str(out), "--target-token-agreement", "1.0",
                                      "--calib-samples", "4", "--heldout-samples", "8", "--max-new-tokens", "16"])
    assert result.exit_code == AccuracyError.exit_code, result.output
    text = " ".join(result.output.split())
    assert "--target-token-agreement 1" in text and "best teacher-forced token agreement" in text
    best = float(text.split("held-out prompts is ")[1].split(",")[0])
    assert 0 < best < 1
    assert sorted(p.name for p in (out / "onnx").iterdir()) == ["fp32"]  # no int8 folder, no leftovers


def test_fewest_groups_bisection() -> None:
    from trt_pipeline.quantize.int8_search import fewest_groups

    calls = []

    def agreement(k: int) -> float:
        calls.append(k)
        return 0.80 + 0.02 * k

    k, tried = fewest_groups(10, agreement, 0.9)
    assert k == 5 and tried[5] >= 0.9 > tried[4]
    assert calls == [0, 10, 5, 2, 3, 4]  # plain, everything kept, then a bisection: each k once
    assert fewest_groups(10, lambda k: 0.95, 0.9) == (0, {0: 0.95})
    with pytest.raises(AccuracyError, match=r"best teacher-forced token agreement on the held-out prompts is 0.9000"):
        fewest_groups(4, lambda k: 0.8 + 0.025 * k, 0.95)


def test_target_options_are_checked() -> None:
    from trt_pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match="target-token-agreement"):
        Int8Config(target_token_agreement=1.5)
    with pytest.raises(ConfigError, match="held-out"):
        Int8Config(target_token_agreement=0.9, evaluate=False)
    with pytest.raises(ConfigError, match="decoder-precision int8"):
        Int8Config(target_token_agreement=0.9, components={"vision_encoder": "int8", "decoder": "fp16"})
    with pytest.raises(ConfigError, match="smooth-alpha"):
        Int8Config(smooth_alpha=1.5)


def test_calibrate_once(tiny_export: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One calibration pass serves several quantizations; ModelOpt itself only sees one feed."""
    from onnx import numpy_helper

    from trt_pipeline.quantize import int8
    from trt_pipeline.quantize.calibration_reader import CalibrationReader
    from trt_pipeline.quantize.dataset import load_split
    from trt_pipeline.quantize.precision import calibration_folders

    calib_dir, _ = calibration_folders(None)
    feeds = CalibrationReader(tiny_export, load_split(calib_dir), 6).feeds("decoder")
    src = tiny_export / "onnx" / "fp32" / "decoder.onnx"
    seen: list[int] = []
    original = int8.feed_list_reader
    monkeypatch.setattr(int8, "feed_list_reader", lambda data: (seen.append(len(data)), original(data))[1])
    calibration = int8.calibrate_int8(src, feeds, method="max")
    assert calibration.feeds == len(feeds) >= 6 and calibration.seconds > 0
    reports = [int8.quantize_int8_file(src, tmp_path / f"d{i}.onnx", feeds, method="max", calibration=calibration)
               for i in range(2)]
    assert seen == [1, 1]  # ModelOpt's internal calibrator ran on one feed, not len(feeds)
    assert all(r.calibration_seconds == 0 and r.calibration_feeds == len(feeds) for r in reports)
    assert (tmp_path / "d0.onnx").read_bytes() == (tmp_path / "d1.onnx").read_bytes()
    model = onnx.load(str(tmp_path / "d0.onnx"))
    inits = {t.name: t for t in model.graph.initializer}
    checked = 0
    for node in model.graph.node:  # every activation Q/DQ scale is our max / 127 (fp16-rounded)
        if node.op_type == "QuantizeLinear" and node.input[0] in calibration.ranged and node.input[1] in inits:
            scale = float(numpy_helper.to_array(inits[node.input[1]]))
            assert scale == pytest.approx(calibration.ranged[node.input[0]] / 127.0, rel=1e-3)
            checked += 1
    assert checked >= 5
    with pytest.raises(int8.ConfigError, match="calibration passed"):
        int8.quantize_int8_file(src, tmp_path / "x.onnx", feeds, method="entropy", calibration=calibration)
