"""benchmarks/peer_genai.py: the parts that need no genai venv (config mapping, commands, medians,
paired ratios, table, profile parsing), plus a worker round trip that runs only where the venv is."""

from __future__ import annotations

import importlib.util
import json
import statistics
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from trt_pipeline.fixtures.presets import PRESETS

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


peer = load("peer_genai")
worker_ours = load("peer_genai_worker_ours")


def test_qwen2_config_copies_the_small_preset_text_dims():
    text = dict(PRESETS["small"].text, vocab_size=2304, eos_token_id=[7, 8], hidden_act="silu")
    config = peer.qwen2_config(text)
    for name in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                 "num_key_value_heads", "rms_norm_eps", "max_position_embeddings"):
        assert config[name] == PRESETS["small"].text[name], name
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_key_value_heads"]) == (768, 12, 2)
    assert config["vocab_size"] == 2304
    assert config["rope_theta"] == PRESETS["small"].text["rope_theta"] == 10000.0
    assert config["tie_word_embeddings"] is False
    assert (config["eos_token_id"], config["bos_token_id"], config["pad_token_id"]) == ([7, 8], 7, 7)


def test_qwen2_config_reads_rope_theta_from_a_saved_config_and_refuses_a_missing_vocab():
    saved = {name: PRESETS["small"].text[name] for name in peer.QWEN2_FIELDS if name != "vocab_size"}
    saved.update(vocab_size=64, rope_parameters={"rope_theta": 5e5, "partial_rotary_factor": 0.5})
    assert peer.qwen2_config(saved)["rope_theta"] == 5e5
    with pytest.raises(ValueError, match="vocab_size"):
        peer.qwen2_config(dict(PRESETS["small"].text))  # a preset's vocab comes from its tokenizer


def test_gemma2_peer_is_a_layer_of_glm4_shape():
    """The gemma2 peer: the small preset's dims, and per layer GLM-4's four norms, SiLU, no soft-capping."""
    from transformers import Gemma2Config
    from transformers.models.gemma2.modeling_gemma2 import Gemma2DecoderLayer
    from transformers.models.glm4v.configuration_glm4v import Glm4vTextConfig
    from transformers.models.glm4v.modeling_glm4v import Glm4vTextDecoderLayer

    text = dict(PRESETS["small"].text, vocab_size=2304, hidden_act="silu")
    config = peer.peer_config("gemma2", text)
    assert {k: v for k, v in config.items() if k in peer.QWEN2_FIELDS} == \
        {k: v for k, v in peer.qwen2_config(text).items() if k in peer.QWEN2_FIELDS}
    gemma = Gemma2Config(**config)
    assert (gemma.head_dim, gemma.query_pre_attn_scalar, gemma.hidden_activation) == (64, 64, "silu")
    assert gemma.attn_logit_softcapping is None and gemma.final_logit_softcapping is None
    assert gemma.layer_types == ["full_attention"] * 12  # genai builds no sliding-window layer

    def norms(layer) -> int:
        return sum("norm" in name for name, _ in layer.named_children())

    glm = Glm4vTextConfig(**{k: v for k, v in text.items() if k in peer.QWEN2_FIELDS})
    assert norms(Gemma2DecoderLayer(gemma, 0)) == norms(Glm4vTextDecoderLayer(glm, 0)) == 4
    with pytest.raises(ValueError, match="qwen2, gemma2"):
        peer.peer_config("llama", text)


def test_peer_folders_keep_the_qwen2_names():
    work = Path("/w")
    assert (peer.peer_dirs(work, "qwen2"), peer.peer_dirs(work, "qwen2", "int4")) == (work / "qwen2", work / "genai-int4")
    assert peer.peer_dirs(work, "gemma2", "fp32") == work / "genai-gemma2-fp32"


def test_decode_only_keeps_the_decode_cases_and_the_checkpoint_options_reach_init_checkpoint():
    args = peer.parse_args(["--decode-only", "--preset", "phone-9b", "--init-arg=--layers", "--init-arg=2"])
    assert peer.cases_of(args) == (("decode", 64), ("decode", 512))
    assert peer.cases_of(peer.parse_args([])) == peer.CASES
    assert (args.preset, args.init_arg) == ("phone-9b", ["--layers", "2"])


def test_builder_and_venv_commands():
    command = peer.builder_command("/v/bin/python", "/w/qwen2", "/w/genai-int4", "int4", "/w/cache")
    assert command == ["/v/bin/python", "-m", "onnxruntime_genai.models.builder", "-i", "/w/qwen2", "-o",
                       "/w/genai-int4", "-p", "int4", "-e", "cpu", "-c", "/w/cache"]
    with pytest.raises(ValueError):
        peer.builder_command("python", "a", "b", "fp16", "c")
    create, install = peer.venv_commands(Path("/x/genai"))
    assert create[-1] == "/x/genai" and install[0] == "/x/genai/bin/python"
    assert "onnxruntime-genai==0.18.*" in install and "torch==2.13.0" in install
    assert create[1:3] == ["-m", "venv"] and install[1:4] == ["-m", "pip", "install"]  # into the new venv only


def test_side_order_rotates_so_no_side_always_goes_first():
    sides = ["ours", "genai", "ours_genai_ort"]
    orders = [peer.side_order(i, sides) for i in range(4)]
    assert orders[:3] == [sides, ["genai", "ours_genai_ort", "ours"], ["ours_genai_ort", "ours", "genai"]]
    assert orders[3] == sides and [peer.side_order(i, ["a", "b"])[0] for i in range(2)] == ["a", "b"]


def test_summarize_medians_over_rounds_and_paired_speedup():
    rounds = [
        {"ours/fp32/decode @64": [0.010, 0.012, 0.011], "genai/fp32/decode @64": [0.020, 0.022, 0.021]},
        {"ours/fp32/decode @64": [0.030, 0.030, 0.031], "genai/fp32/decode @64": [0.033, 0.034, 0.033]},
        {"ours/fp32/decode @64": [0.012], "genai/fp32/decode @64": [0.018], "ours_genai_ort/fp32/decode @64": [0.009]},
        {"genai/int4/decode @64": [0.004, 0.005, 0.006]},
    ]
    rows = {(row["variant"], row["case"]): row for row in peer.summarize(rounds)}
    fp32 = rows[("fp32", "decode @64")]
    assert fp32["ours_ms"] == pytest.approx(12.0) and fp32["genai_ms"] == pytest.approx(21.0)
    ratios = [21 / 11, 33 / 30, 18 / 12]
    assert fp32["speedup"] == pytest.approx(statistics.median(ratios), abs=1e-3)
    assert fp32["speedup_min"] == pytest.approx(1.1, abs=1e-3) and fp32["speedup_max"] == pytest.approx(21 / 11, abs=1e-3)
    assert fp32["rounds"] == 3
    assert fp32["ours_genai_ort_ms"] == pytest.approx(9.0) and fp32["speedup_same_ort"] == pytest.approx(2.0)
    int4 = rows[("int4", "decode @64")]
    assert int4["ours_ms"] is None and int4["speedup"] is None and int4["genai_ms"] == pytest.approx(5.0)
    assert [row["variant"] for row in peer.summarize(rounds)] == ["fp32", "int4"]  # measurement order


def test_table_lines_and_op_histogram():
    rows = peer.summarize([{"ours/fp32/prefill 16": [0.002], "genai/fp32/prefill 16": [0.003]}])
    lines = peer.table_lines(rows + [dict(rows[0], variant="int4", ours_ms=None, speedup=None)])
    assert lines[2] == "| fp32 | prefill 16 | 2.00 | 3.00 | 1.50x (1.50-1.50) | n/a, n/a | 1 |"
    assert lines[3] == "| int4 | prefill 16 | n/a | 3.00 | n/a | n/a, n/a | 1 |"
    histogram = peer.op_histogram(["MatMul", "Add", "MatMul", "Concat", "MatMul", "Add"], top=2)
    assert histogram == {"nodes": 6, "op_types": 3, "top": {"MatMul": 3, "Add": 2}}


def test_profile_split_counts_only_the_last_runs():
    def run(ts: float, dur: float) -> dict:
        return {"cat": "Session", "name": "model_run", "ts": ts, "dur": dur}

    def node(op: str, ts: float, dur: float) -> dict:
        return {"cat": "Node", "name": f"n_{op}_kernel_time", "ts": ts, "dur": dur, "args": {"op_name": op}}

    trace = [run(0, 100), node("MatMul", 10, 90),  # the cache fill: left out
             run(200, 50), node("MatMul", 210, 30), node("Concat", 245, 10), {"cat": "Node", "name": "x_fence"},
             run(300, 50), node("MatMul", 305, 30), node("Concat", 340, 10)]
    split = worker_ours.op_time_split(trace, runs=2, top=1)
    assert split["runs"] == 2 and split["kernel_us_per_run"] == pytest.approx(40.0)
    assert split["top"] == [{"op_type": "MatMul", "us_per_run": 30.0, "share": 0.75}]
    assert split["other_share"] == pytest.approx(0.25) and split["cache_copy_ops_share"] == pytest.approx(0.25)


@pytest.mark.skipif(not (peer.DEFAULT_VENV / "bin" / "python").is_file(),
                    reason=f"the onnxruntime-genai venv {peer.DEFAULT_VENV} is absent (benchmarks/peer_genai.py makes it)")
def test_genai_worker_answers_versions_in_its_venv():
    requests = "\n".join(json.dumps(r) for r in ({"cmd": "versions"}, {"cmd": "nope"}, {"cmd": "quit"})) + "\n"
    done = subprocess.run([str(peer.DEFAULT_VENV / "bin" / "python"), str(peer.WORKER_GENAI), "serve"],
                          input=requests, capture_output=True, text=True, timeout=120)
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    assert answers[0]["ok"] and answers[0]["result"]["onnxruntime-genai"].startswith("0.18")
    assert answers[1] == {"ok": False, "error": "ValueError: unknown command 'nope'"}
    assert answers[2] == {"ok": True} and done.returncode == 0
    assert sys.executable != str(peer.DEFAULT_VENV / "bin" / "python")


def test_int4_arguments_are_options_of_precision_int4():
    if not peer.int4_available():
        pytest.skip("this checkout has no `autoglm-trt precision int4` (the benchmark then skips ours int4)")
    help_text = subprocess.run(peer.cli("precision", "int4", "--help"), capture_output=True, text=True,
                               env={**peer.ours_env(), "COLUMNS": "250"}).stdout
    for flag in [a for a in peer.INT4_MATCHING_GENAI + peer.INT4_ORT_DEFAULTS if a.startswith("--")]:
        assert flag in help_text, flag


graph_profile = load("ort_graph_profile")


def test_split_profile_separates_kernel_time_from_the_executor():
    """Synthetic trace: 3 runs (the first left out), 2 nodes each; numbers follow from the events."""
    trace = []
    for run, start in enumerate((0.0, 1000.0, 2000.0)):
        trace.append({"cat": "Session", "name": "model_run", "ts": start, "dur": 100.0 + 10 * run})
        trace.append({"cat": "Node", "name": "mm_kernel_time", "ts": start + 5, "dur": 60.0, "args": {"op_name": "MatMul"}})
        trace.append({"cat": "Node", "name": "n_kernel_time", "ts": start + 70, "dur": 20.0,
                      "args": {"op_name": "RMSNormalization"}})
        trace.append({"cat": "Node", "name": "n_fence_before", "ts": start + 69, "dur": 1.0, "args": {"op_name": "X"}})
    split = graph_profile.split_profile(trace, runs=2)
    assert split["runs"] == 2 and split["nodes_per_run"] == 2.0
    assert split["run_us"] == 115.0 and split["kernels_us"] == 80.0 and split["outside_kernels_us"] == 35.0
    assert split["outside_per_node_us"] == 17.5
    assert [entry["op_type"] for entry in split["top"]] == ["MatMul", "RMSNormalization"]


@pytest.mark.parametrize("flavour", ["inplace", "concat"])
def test_graph_profile_binds_the_cache_as_the_runtime_does(flavour, tiny_inplace_export, tiny_fused_export):
    """Our inplace decoder: every present.* bound to its past (nothing allocated per step); concat: none.
    The unprofiled time and the profiled run are real measurements of the same graph and feed."""
    import onnx

    export = tiny_inplace_export if flavour == "inplace" else tiny_fused_export
    path = export / "onnx" / "fp32" / "decoder.onnx"
    layers = sum(1 for node in onnx.load(str(path), load_external_data=False).graph.output
                 if node.name.startswith("present.") and node.name.endswith(".key"))
    result = graph_profile.profile_decode_graph(str(path), 24, runs=5, warmup=2)
    assert result["aliased_outputs"] == (2 * layers if flavour == "inplace" else 0)
    assert result["runs"] == 5 and result["nodes_per_run"] > 2 * layers
    assert 0 < result["kernels_us"] < result["run_us"] and result["unprofiled_us"] > 0
    feed = graph_profile.decode_feed(__import__("onnxruntime").InferenceSession(str(path)), 24)
    assert feed["attention_mask"].shape == (1, 25)
    cache = feed["past_key_values.0.key"]
    assert (cache.shape[1] if flavour == "inplace" else cache.shape[2]) == (25 if flavour == "inplace" else 24)


def test_graphs_same_ort_times_every_graph_in_turns(tiny_inplace_export, tiny_fused_export):
    """Two decoder graphs in one process: a median per graph, every round kept, paired speeds that are each
    other's inverse (odd rounds: the median ratio is one round's); a graph that cannot load stops it."""
    graphs = {name: {"path": str(export / "onnx" / "fp32" / "decoder.onnx")}
              for name, export in (("inplace", tiny_inplace_export), ("concat", tiny_fused_export))}
    result = graph_profile.interleaved_graph_times(graphs, 24, rounds=3, runs=5, warmup=2)
    assert set(result["median_us"]) == {"inplace", "concat"} and all(v > 0 for v in result["median_us"].values())
    assert all(len(values) == 3 for values in result["rounds_us"].values())
    forward, backward = result["speed_vs"]["inplace"]["concat"], result["speed_vs"]["concat"]["inplace"]
    assert forward > 0 and abs(forward * backward - 1) < 0.01
    with pytest.raises(Exception):
        graph_profile.interleaved_graph_times({"missing": {"path": "/nonexistent.onnx"}}, 8, rounds=1, runs=1)


def test_decode_warmup_is_the_untimed_steps_after_each_fill():
    args = peer.parse_args(["--decode-warmup", "30", "--iterations", "8"])
    assert peer.iterations_for("decode", 512, args) == (8, 30)
    assert peer.iterations_for("prefill", 256, args) == (4, 1)  # prefill keeps its own warm-up
    assert peer.parse_args([]).decode_warmup == 2  # the steps right after a fill, as before
