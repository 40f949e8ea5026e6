"""Twin validation (issue 12): a model too big to run is validated on its layer-truncated twin, plus
a layer-by-layer structure check and initializer hashes of the full export.

The "full" model here is a tiny bf16 checkpoint with 3 decoder layers and 3 vision blocks; the twin
keeps 2 of each (layer 0 is special, layer 1 stands for every later one)."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest

from trt_pipeline.config import ExportConfig
from trt_pipeline.errors import OnnxModelError
from trt_pipeline.export.exporter import export
from trt_pipeline.export.structure import compare_to_twin, graph_layers
from trt_pipeline.export.twin import plan_validation, twin_entries, write_twin_checkpoint
from trt_pipeline.export.twin_validate import validate_export

THREE_LAYERS = {"text_num_hidden_layers": 3, "vision_depth": 3}
RANGES = dict(max_batch=2, max_seq=16, max_kv=24, max_image_tokens=16)


@pytest.fixture(scope="module")
def three_layer(tmp_path_factory):
    """(checkpoint, bf16 export without validation) of a 3-layer tiny model."""
    from trt_pipeline.fixtures.checkpoint_factory import write_checkpoint

    root = tmp_path_factory.mktemp("twin")
    checkpoint = write_checkpoint(root / "ck", preset="tiny", seed=5, dtype="bfloat16", overrides=THREE_LAYERS,
                                  streaming=True, max_shard_size="1MB")
    out = export(checkpoint, root / "out", ExportConfig(validate=False, streaming=True, **RANGES), show_progress=False)
    return checkpoint, out


@pytest.fixture(scope="module")
def twin_report(three_layer):
    checkpoint, out = three_layer
    report = validate_export(out, checkpoint, "bf16", mode="twin", show_progress=False)
    return report, json.loads((out / "reports" / "validation-bf16.json").read_text())


def _sha(path, name):
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return hashlib.sha256(handle.get_tensor(name).view(-1).view(dtype=__import__("torch").uint8).numpy()).hexdigest()


def test_twin_checkpoint_holds_the_real_tensors(three_layer, tmp_path):
    from transformers import Glm4vForConditionalGeneration

    checkpoint, _ = three_layer
    twin = write_twin_checkpoint(checkpoint, tmp_path / "twin", layers=2)
    config = json.loads((twin / "config.json").read_text())
    assert config["text_config"]["num_hidden_layers"] == 2 and config["vision_config"]["depth"] == 2
    kept = twin_entries(checkpoint, 2)
    assert not any(".layers.2." in name or ".blocks.2." in name for name in kept)
    for entry in kept.values():  # byte for byte what the shards hold
        assert _sha(twin / "model.safetensors", entry.checkpoint_name) == _sha(entry.file, entry.checkpoint_name)
    model = Glm4vForConditionalGeneration.from_pretrained(str(twin))  # a checkpoint transformers loads
    assert len(model.model.language_model.layers) == 2 and len(model.model.visual.blocks) == 2


def test_twin_validation_passes_with_real_numbers(twin_report):
    report, saved = twin_report
    assert report.mode == "twin" and saved["mode"] == "twin" and saved["passed"]
    assert saved["plan"]["mode"] == "twin" and saved["failures"] == []
    fp32 = [r for r in saved["results"] if r["point"]["compute"] == "float32"]
    bf16 = [r for r in saved["results"] if r["point"]["compute"] == "bfloat16"]
    assert len(fp32) == len(bf16) == 7  # 1 image + 3 decoder steps x (logits, KV)
    # fp32 twin on ORT vs transformers-fp32 from the same bf16 weights: fp32 rounding only
    assert all(0 < r["max_abs"] <= 1e-4 for r in fp32), [(r["output"], r["max_abs"]) for r in fp32]
    # bf16 vs transformers-bf16: within 2x transformers' own bf16-vs-fp32 drift, which is not vacuous
    for r in bf16:
        assert r["reference_drift"] > 1e-3 and r["max_abs"] <= 2 * r["reference_drift"], r
    steps = [(r["point"]["sequence_length"], r["point"]["past_sequence_length"]) for r in fp32 if r["output"] == "logits"]
    assert steps == [(16, 0), (8, 16), (1, 24)]  # prefill, append on a filled cache, decode


def test_full_export_matches_its_twin_layer_by_layer(twin_report):
    _, saved = twin_report
    for component in ("vision_encoder", "decoder"):
        structure = saved["twin"]["structure"][component]
        assert structure["identical"] and structure["layers"] == 3 and structure["twin_layers"] == 2, structure
        assert structure["nodes"] > structure["twin_nodes"] + structure["nodes_per_layer"] - 1
        hashes = saved["twin"]["initializer_hashes"][component]
        assert hashes["equal"] and hashes["checked"] == hashes["expected"] > 10


def test_structure_check_finds_a_changed_layer(three_layer, twin_report, tmp_path):
    """Edit one attribute of one node in layer 2 of the full decoder: the check names that layer."""
    import onnx

    _, out = three_layer
    folder = tmp_path / "bf16"
    shutil.copytree(out / "onnx" / "bf16", folder)
    model = onnx.load(str(folder / "decoder.onnx"), load_external_data=False)
    layers = graph_layers(folder / "decoder.onnx")
    assert layers.num_layers == 3
    node = next(n for n in model.graph.node if n.op_type == "Softmax"
                and any("language_model.layers.2" in p.value for p in n.metadata_props))
    node.attribute[0].i = 1 if node.attribute[0].i != 1 else 2
    onnx.save(model, str(folder / "decoder.onnx"))
    twin = graph_layers(out / "onnx" / "bf16" / "decoder.onnx")  # the unedited 3-layer graph as reference
    result = compare_to_twin(graph_layers(folder / "decoder.onnx"), twin)
    assert not result["identical"] and result["differences"][0].startswith("layer 2"), result


def test_structure_failure_fails_validation(tmp_path):
    """A structural difference fails the report (passed: false) with a typed error naming the layer."""
    import trt_pipeline.export.twin_validate as twin_validate

    checks = {"structure": {"decoder": {"identical": False, "differences": ["layer 2 vs twin layer 1: node 3"]}},
              "initializer_hashes": {"decoder": {"equal": True, "differ": [], "checked": 5, "expected": 5}}}
    failures = twin_validate.structure_failures(checks)
    assert failures and "layer 2" in failures[0]
    from trt_pipeline.export.validate import ValidationReport, write_and_check

    report = ValidationReport("bf16", mode="twin", failures=failures)
    with pytest.raises(OnnxModelError, match="structural"):
        write_and_check(report, tmp_path, "bf16")
    assert json.loads((tmp_path / "reports" / "validation-bf16.json").read_text())["passed"] is False


def test_plan_chooses_twin_when_the_model_does_not_fit(three_layer, monkeypatch):
    import trt_pipeline.export.twin as twin

    checkpoint, _ = three_layer
    monkeypatch.setattr(twin, "available_memory", lambda: 10**12)
    assert plan_validation(checkpoint, "bfloat16").mode == "full"
    monkeypatch.setattr(twin, "available_memory", lambda: 10**6)
    plan = plan_validation(checkpoint, "bfloat16")
    assert plan.mode == "twin" and plan.needed_bytes > plan.available_bytes and "twin" in plan.reason
    assert plan_validation(checkpoint, "bfloat16", "full").mode == "full"  # the override wins
