"""RTN INT4 one weight at a time (``quantize/int4_rtn.py``) against ModelOpt's RTN of the whole graph.

``precision int4 --method rtn`` (and AWQ's fallback) quantizes each weight on its own so the real
9B's fp32 graph is never loaded whole. These tests hold it to ModelOpt's whole-graph result: the same
DequantizeLinear nodes, the same int4 bytes and scales, the same outputs, on both tiny components
(the vision encoder's Gemms with ``transB`` included) and on a weight cut into column slices.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from trt_pipeline.artifacts.layout import onnx_file_name

BLOCK = 16


def _feed(export: Path, component: str) -> dict[str, np.ndarray]:
    from trt_pipeline.quantize.calibration_reader import CalibrationReader
    from trt_pipeline.quantize.dataset import load_split
    from trt_pipeline.quantize.precision import calibration_folders

    calib_dir, _ = calibration_folders(None)
    return CalibrationReader(export, load_split(calib_dir), 2).feeds(component)[0]


def _dequantized(model: onnx.ModelProto) -> dict[str, tuple[list[str], dict[str, int], list[np.ndarray], str]]:
    """Per DequantizeLinear: (inputs, attributes, the initializers' arrays, their element types)."""
    inits = {t.name: t for t in model.graph.initializer}
    found = {}
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear":
            found[node.name] = (list(node.input), {a.name: a.i for a in node.attribute},
                                [numpy_helper.to_array(inits[name]) for name in node.input],
                                ",".join(onnx.TensorProto.DataType.Name(inits[name].data_type) for name in node.input))
    return found


def _matmul_inputs(model: onnx.ModelProto) -> dict[str, list[str]]:
    return {n.name: list(n.input) for n in model.graph.node if n.op_type == "MatMul"}


@pytest.mark.parametrize("component", ["decoder", "vision_encoder"])
def test_one_weight_at_a_time_equals_modelopt_rtn_of_the_whole_graph(tiny_export: Path, tmp_path: Path,
                                                                     component: str) -> None:
    from trt_pipeline.quantize.int4 import (_exclusions, _modelopt_int4, prepare_graph, quantize_int4_file,
                                            weight_matmuls)
    from trt_pipeline.runtime.onnxruntime_runner import session

    src = tiny_export / "onnx" / "fp32" / onnx_file_name(component)
    feed = _feed(tiny_export, component)
    model = onnx.load(str(src))
    matmuls = weight_matmuls(model)
    unfit = tuple(f"{m.name}$" for m in matmuls if m.k % BLOCK)  # the patch embedding's K = 1176
    excluded = _exclusions(model, matmuls, False, unfit)
    gemms = [m.name for m in matmuls if m.op_type == "Gemm" and m.name not in excluded]
    assert component == "decoder" or gemms  # the vision encoder's Gemms (transB) take the rewrite path
    prepare_graph(src, tmp_path / "up" / src.name, 21, None, gemms)
    whole = _modelopt_int4(tmp_path / "up" / src.name, "rtn", [], BLOCK, list(excluded), False, None)
    onnx.save(whole, str(tmp_path / "whole.onnx"))

    report = quantize_int4_file(src, tmp_path / "one" / src.name, [feed], method="rtn", activations="fp32",
                                block_size=BLOCK, nodes_to_exclude=unfit)
    one = onnx.load(str(tmp_path / "one" / src.name))

    expected, actual = _dequantized(whole), _dequantized(one)
    assert sorted(actual) == sorted(expected) and len(actual) == len(report.nodes_quantized) > 0
    for name, (inputs, attributes, arrays, types) in expected.items():
        got = actual[name]
        assert (got[0], got[1], got[3]) == (inputs, attributes, types), name
        for want, have in zip(arrays, got[2]):
            assert want.dtype == have.dtype and np.array_equal(want, have), name  # byte for byte
    assert _matmul_inputs(one) == _matmul_inputs(whole)
    names = [o.name for o in session(tmp_path / "whole.onnx").get_outputs()]
    for name, a, b in zip(names, session(tmp_path / "whole.onnx").run(names, feed),
                          session(tmp_path / "one" / src.name).run(names, feed)):
        assert a.shape == b.shape and float(np.max(np.abs(a - b))) == 0.0, name


@pytest.mark.parametrize(("rows", "columns"), [(16, 100), (48, 100), (16, 33), (64, 33)])
def test_row_slices_give_the_whole_weights_rtn(rows: int, columns: int) -> None:
    """RTN's scales are per block of rows of one column: a weight quantized in slices of whole blocks of
    rows (how the 9B's 2.5 GB LM head stays under protobuf's 2 GB and in bounded memory) is the weight
    quantized whole (the slices' packed int4 bytes joined), for even and odd widths and a short last slice."""
    from trt_pipeline.quantize.int4_rtn import modelopt_rtn, quantized_weight

    weight = np.random.default_rng(rows + columns).standard_normal((112, columns)).astype(np.float32)
    weight[40:56, 3] *= 40  # one loud block: a scale shared across blocks or columns would show
    node, whole = modelopt_rtn("w", weight, BLOCK)
    sliced_node, sliced = quantized_weight("w", weight, BLOCK, chunk_bytes=rows * columns * 4)
    assert list(sliced_node.input) == list(node.input) and sorted(sliced) == sorted(whole)
    for name in whole:
        assert sliced[name].data_type == whole[name].data_type and list(sliced[name].dims) == list(whole[name].dims)
        assert np.array_equal(numpy_helper.to_array(sliced[name]), numpy_helper.to_array(whole[name])), name


def test_no_slice_leaves_garbage_behind() -> None:
    """ModelOpt's graph for one slice is a web of reference cycles holding the slice's fp32 copies. Left to
    Python's occasional full collection they piled up to ~2.5 GB on the real 9B (measured: anonymous memory
    1.1 -> 3.0 GB across the layers), which pushed the LM head's source out of the page cache under a
    4 GiB cap and made its quantization re-read the disk for an hour. Each slice's cycles are collected
    as it ends: nothing is left for a collection to find."""
    import gc

    from trt_pipeline.quantize.int4_rtn import quantized_weight

    weight = np.random.default_rng(3).standard_normal((8 * BLOCK, 64)).astype(np.float32)
    quantized_weight("w", weight, BLOCK)  # imports and ModelOpt's first-call set-up
    gc.collect()
    node, tensors = quantized_weight("w", weight, BLOCK, chunk_bytes=2 * BLOCK * 64 * 4)  # four slices
    assert node.op_type == "DequantizeLinear" and tensors
    assert gc.collect() == 0


def test_rtn_writes_external_data_when_the_source_has_it(tiny_export: Path, tmp_path: Path) -> None:
    """A source with external data (every export above 2 GB) gives an int4 graph with external data,
    whose weights are the in-memory source's quantized ones."""
    from trt_pipeline.quantize.int4 import quantize_int4_file

    src = tiny_export / "onnx" / "fp32" / "decoder.onnx"
    external = tmp_path / "external" / "decoder.onnx"
    external.parent.mkdir()
    onnx.save(onnx.load(str(src)), str(external), save_as_external_data=True, location="decoder.onnx.data",
              size_threshold=0)
    feed = _feed(tiny_export, "decoder")
    quantize_int4_file(src, tmp_path / "a" / "decoder.onnx", [feed], method="rtn", activations="fp32", block_size=BLOCK)
    quantize_int4_file(external, tmp_path / "b" / "decoder.onnx", [feed], method="rtn", activations="fp32",
                       block_size=BLOCK)
    assert (tmp_path / "b" / "decoder.onnx.data").is_file() and not (tmp_path / "a" / "decoder.onnx.data").exists()
    a, b = (_dequantized(onnx.load(str(tmp_path / side / "decoder.onnx"))) for side in "ab")
    assert sorted(a) == sorted(b)
    for name in a:
        assert all(np.array_equal(x, y) for x, y in zip(a[name][2], b[name][2])), name


def test_awq_is_refused_up_front_when_the_graph_exceeds_the_memory_and_rtn_is_not(tiny_export: Path, tmp_path: Path,
                                                                                    monkeypatch) -> None:
    """AWQ loads the whole fp32 graph (the real 9B's 41 GB): where that cannot fit it is refused before any
    work, naming the sizes and ``--method rtn``; RTN, one weight at a time, runs under the same limit."""
    import trt_pipeline.export.twin as twin
    from trt_pipeline.errors import ConfigError
    from trt_pipeline.quantize.int4 import quantize_int4_file
    from trt_pipeline.quantize.memory_needs import stored_bytes

    src = tiny_export / "onnx" / "fp32" / "decoder.onnx"
    monkeypatch.setattr(twin, "available_memory", lambda: stored_bytes(src) // 2)
    feed = _feed(tiny_export, "decoder")
    with pytest.raises(ConfigError, match=r"--method awq quantizes .* as a whole") as info:
        quantize_int4_file(src, tmp_path / "awq" / "decoder.onnx", [feed], method="awq", activations="fp32",
                           block_size=BLOCK)
    assert "--method rtn" in info.value.hint and not (tmp_path / "awq").exists()
    report = quantize_int4_file(src, tmp_path / "rtn" / "decoder.onnx", [feed], method="rtn", activations="fp32",
                                block_size=BLOCK)
    assert report.method_used == "rtn" and report.nodes_quantized


def _external_copy(streamed_export: Path, to: Path) -> Path:
    """A writable copy of the streamed export: its fp32 graphs store their weights as external data, as
    every export above 2 GB does (the real 9B's)."""
    import shutil

    out = Path(shutil.copytree(streamed_export, to, ignore=shutil.ignore_patterns("fp16", "int8", "int4")))
    assert (out / "onnx" / "fp32" / "decoder.onnx.data").is_file()
    return out


def test_rtn_of_a_large_graph_to_fp32_activations_runs_no_fp32_graph(streamed_export: Path, tmp_path: Path,
                                                                     monkeypatch) -> None:
    """Building calibration feeds runs the fp32 graphs (the 9B's decoder: 35 GB in ONNX Runtime). RTN to fp32
    activations of a graph with external data reads none, so ``precision int4`` never builds them there;
    fp16 activations (AutoCast's reference run) still do."""
    from trt_pipeline.config.int4 import Int4Config
    from trt_pipeline.quantize.calibration_reader import CalibrationReader
    from trt_pipeline.quantize.precision import make_int4

    export = _external_copy(streamed_export, tmp_path / "export")
    built: list[str] = []
    real_build = CalibrationReader.build

    def build(self):
        built.append(self.description)
        return real_build(self)

    monkeypatch.setattr(CalibrationReader, "build", build)
    cfg = Int4Config(method="rtn", activations="fp32", block_size=BLOCK, calib_samples=2, evaluate=False,
                     components={"decoder": "int4", "vision_encoder": "fp32"})
    folder = make_int4(export, cfg, show_progress=False)
    manifest = __import__("json").loads((folder / "manifest.json").read_text())
    assert built == [] and manifest["calibration"]["feeds"] is None
    assert manifest["components"]["decoder"]["int4"]["nodes_quantized"]
    assert (folder / "decoder.onnx.data").is_file()  # external in, external out

    fp16 = Int4Config(method="rtn", activations="fp16", block_size=BLOCK, calib_samples=2, evaluate=False,
                      components={"decoder": "int4", "vision_encoder": "fp32"})
    make_int4(export, fp16, show_progress=False)
    assert set(built) == {"calibration inputs"}  # built once, asked for by every reader of it


def test_evaluation_is_refused_up_front_when_the_fp32_decoder_exceeds_the_memory(streamed_export: Path,
                                                                                  tmp_path: Path, monkeypatch) -> None:
    import trt_pipeline.export.twin as twin
    from trt_pipeline.config.int4 import Int4Config
    from trt_pipeline.errors import ConfigError
    from trt_pipeline.quantize.memory_needs import stored_bytes
    from trt_pipeline.quantize.precision import make_int4

    export = _external_copy(streamed_export, tmp_path / "export")
    monkeypatch.setattr(twin, "available_memory",
                        lambda: stored_bytes(export / "onnx" / "fp32" / "decoder.onnx") - 1)
    with pytest.raises(ConfigError, match="the accuracy gates run .*decoder.onnx") as info:
        make_int4(export, Int4Config(method="rtn", activations="fp32", block_size=BLOCK, calib_samples=2),
                  show_progress=False)
    assert "--no-evaluate" in info.value.hint
    assert sorted(p.name for p in (export / "onnx").iterdir()) == ["fp32"]  # nothing written


def test_calibrating_is_refused_up_front_when_the_fp32_graphs_exceed_the_memory(streamed_export: Path, tmp_path: Path,
                                                                                 monkeypatch) -> None:
    """fp16 activations need calibration feeds, made by running the fp32 graphs (the 9B's decoder: 35 GB): where
    they cannot fit, ``precision int4`` says so before any work and names the flags that need no calibration;
    with those flags the same limit is no obstacle."""
    import trt_pipeline.export.twin as twin
    from trt_pipeline.config.int4 import Int4Config
    from trt_pipeline.errors import ConfigError
    from trt_pipeline.quantize.memory_needs import stored_bytes
    from trt_pipeline.quantize.precision import make_int4

    export = _external_copy(streamed_export, tmp_path / "export")
    monkeypatch.setattr(twin, "available_memory",
                        lambda: stored_bytes(export / "onnx" / "fp32" / "decoder.onnx") - 1)
    components = {"decoder": "int4", "vision_encoder": "fp32"}
    with pytest.raises(ConfigError, match="building the int4 calibration feeds runs .*decoder.onnx") as info:
        make_int4(export, Int4Config(method="rtn", activations="fp16", block_size=BLOCK, calib_samples=2,
                                     evaluate=False, components=components), show_progress=False)
    assert "--method rtn --activations fp32" in info.value.hint
    assert sorted(p.name for p in (export / "onnx").iterdir()) == ["fp32"]  # nothing written
    make_int4(export, Int4Config(method="rtn", activations="fp32", block_size=BLOCK, calib_samples=2, evaluate=False,
                                 components=components), show_progress=False)


def test_every_stage_that_cannot_fit_is_named_in_one_refusal(streamed_export: Path, tmp_path: Path,
                                                             monkeypatch) -> None:
    """``precision int4`` with its defaults on the 9B both evaluates and calibrates, and neither fits on an
    ordinary machine: one refusal names both, with both ways out, so the user is not refused a second time
    after following the first hint. Following both runs. The refusal comes before the fp32 graphs are
    verified against their manifest (hashing the 9B's 37 GB took a minute before the refusal); a run
    that fits still verifies them."""
    import trt_pipeline.export.twin as twin
    from trt_pipeline.artifacts.manifests import ComponentEntry
    from trt_pipeline.config.int4 import Int4Config
    from trt_pipeline.errors import ConfigError
    from trt_pipeline.quantize.memory_needs import stored_bytes
    from trt_pipeline.quantize.precision import make_int4

    export = _external_copy(streamed_export, tmp_path / "export")
    monkeypatch.setattr(twin, "available_memory",
                        lambda: stored_bytes(export / "onnx" / "fp32" / "decoder.onnx") - 1)
    verified: list[str] = []
    real_verify = ComponentEntry.verify

    def verify(self, *args, **kwargs):
        verified.append(self.path.name)
        return real_verify(self, *args, **kwargs)

    monkeypatch.setattr(ComponentEntry, "verify", verify)
    components = {"decoder": "int4", "vision_encoder": "fp32"}
    with pytest.raises(ConfigError) as info:
        make_int4(export, Int4Config(method="rtn", activations="fp16", block_size=BLOCK, calib_samples=2,
                                     heldout_samples=2, components=components), show_progress=False)
    assert verified == []  # refused before any graph was hashed
    message = str(info.value)
    fp32 = re.escape(str(export / "onnx" / "fp32"))
    assert re.search(rf"the accuracy gates run {fp32}/decoder\.onnx \([\d.]+ [kKMG]?B\) in ONNX Runtime; and building "
                     rf"the int4 calibration feeds runs {fp32}/vision_encoder\.onnx, {fp32}/decoder\.onnx", message), message
    assert "--no-evaluate" in info.value.hint and "--method rtn --activations fp32" in info.value.hint
    assert sorted(p.name for p in (export / "onnx").iterdir()) == ["fp32"]  # nothing written
    make_int4(export, Int4Config(method="rtn", activations="fp32", block_size=BLOCK, calib_samples=2, evaluate=False,
                                 components=components), show_progress=False)
    assert (export / "onnx" / "int4" / "decoder.onnx").is_file()
    assert {"decoder.onnx", "vision_encoder.onnx"} <= set(verified)  # the run that fits verified its inputs


def test_the_refusal_names_the_option_that_spares_each_component_its_calibration(streamed_export: Path,
                                                                                tmp_path: Path, monkeypatch) -> None:
    """``precision int4 --method rtn --activations fp32`` keeps the default fp16 vision encoder, whose AutoCast
    reads feeds: where they do not fit, the hint names ``--vision-precision fp32``, not the flags already given
    (it named ``--method rtn --activations fp32`` whatever made the feeds needed). Following it runs without
    building any feed. A run that also asks for AWQ is told both."""
    import trt_pipeline.export.twin as twin
    from trt_pipeline.config.int4 import Int4Config
    from trt_pipeline.errors import ConfigError
    from trt_pipeline.quantize.calibration_reader import CalibrationReader
    from trt_pipeline.quantize.memory_needs import stored_bytes
    from trt_pipeline.quantize.precision import make_int4

    export = _external_copy(streamed_export, tmp_path / "export")
    monkeypatch.setattr(twin, "available_memory",
                        lambda: stored_bytes(export / "onnx" / "fp32" / "decoder.onnx") - 1)
    cfg = dict(method="rtn", activations="fp32", block_size=BLOCK, calib_samples=2, evaluate=False)
    with pytest.raises(ConfigError, match="building the int4 calibration feeds runs") as info:
        make_int4(export, Int4Config(**cfg), show_progress=False)  # the vision encoder fp16 by default
    assert info.value.hint.startswith("pass --vision-precision fp32 (") and "--method" not in info.value.hint
    with pytest.raises(ConfigError) as both:
        make_int4(export, Int4Config(**{**cfg, "method": "awq"}), show_progress=False)
    assert both.value.hint.startswith("pass --vision-precision fp32 --method rtn --activations fp32 (")
    assert sorted(p.name for p in (export / "onnx").iterdir()) == ["fp32"]  # nothing written

    built: list[str] = []
    real_build = CalibrationReader.build
    monkeypatch.setattr(CalibrationReader, "build", lambda self: built.append(self.description) or real_build(self))
    folder = make_int4(export, Int4Config(**cfg, components={"vision_encoder": "fp32", "decoder": "int4"}),
                       show_progress=False)
    assert built == [] and (folder / "decoder.onnx").is_file()
