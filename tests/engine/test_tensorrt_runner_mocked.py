"""TensorRT runner against strict autospecs of the real 11.4 Runtime / ICudaEngine / IExecutionContext.

The fake engine "computes" through the device addresses the runner hands to ``set_tensor_address``
(CPU torch tensors stand in for device memory), so buffer allocation, shapes and data flow are
exercised for real; every TensorRT call is checked against the real class (names and signatures).
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from polygraphy.backend.base import BaseRunner
from typer.testing import CliRunner

from trt_pipeline.artifacts import sha256_file
from trt_pipeline.engine.manifest import EngineManifest, manifest_path_for, read_manifest, write_manifest
from trt_pipeline.engine.profiles import derive_profiles, parse_dims, parse_tensor_specs
from trt_pipeline.errors import ConfigError, EngineCompatibilityError, PipelineError, ShapeError
from trt_pipeline.runtime import tensorrt_runner as tr
from trt_pipeline.runtime.tensorrt_runner import (
    CudaPythonDeviceBackend,
    TensorRTRunner,
    TorchDeviceBackend,
    load_engine,
    trt_component_runners,
)

SMALL_DIMS = {
    "batch_size": {"min": 1, "opt": 1, "max": 2},
    "sequence_length": {"min": 1, "opt": 4, "max": 16},
    "past_sequence_length": {"min": 0, "opt": 8, "max": 32},
    "total_sequence_length": {"min": 1, "opt": 12, "max": 48, "expr": "past_sequence_length + sequence_length"},
}
STREAM = 0x5EED
W_LM = np.random.default_rng(0).standard_normal((8, 16)).astype(np.float32)


def reference(feed: dict) -> dict:
    """What the fake engine computes (a toy decoder with a KV cache)."""
    x = feed["inputs_embeds"]
    logits = x @ W_LM + feed["attention_mask"].sum(axis=1, dtype=np.float32)[:, None, None]
    new = np.repeat(np.transpose(x[..., :4], (0, 1, 2))[:, None, :, :], 2, axis=1)  # [b, 2, s, 4]
    out = {"logits": logits.astype(np.float32)}
    for kind, offset in (("key", 0.0), ("value", 1.0)):
        out[f"present.0.{kind}"] = np.concatenate([feed[f"past_key_values.0.{kind}"], new + offset], axis=2)
    return out


class FakeStream:
    cuda_stream = STREAM

    def __init__(self) -> None:
        self.synchronized = 0
        self.waited = 0

    def synchronize(self) -> None:
        self.synchronized += 1

    def wait_stream(self, other) -> None:
        self.waited += 1


def cpu_backend() -> TorchDeviceBackend:
    return TorchDeviceBackend("cpu", stream=FakeStream())


def read_plan(trt, source, chunks: list | None = None) -> bytes:
    """What TensorRT does with its argument: read a buffer, or pull a stream reader to its end."""
    if not hasattr(source, "read"):
        assert isinstance(source, memoryview), f"expected a buffer, got {type(source)}"
        return bytes(source)
    assert getattr(source, "_base_initialized", False), "IStreamReaderV2.__init__ was not called"
    assert source.seek(0, trt.SeekPosition.END) and source.seek(0, trt.SeekPosition.SET)
    data = b""
    while block := source.read(1 << 40, 0):
        if chunks is not None:
            chunks.append(len(block))
        data += block
    return data


@dataclasses.dataclass
class FakeEngineSetup:
    trt: types.ModuleType
    ctx: object
    engine: object
    contexts: list
    engine_path: Path
    manifest: EngineManifest
    profiles: tuple


@pytest.fixture
def setup(tmp_path, fakes) -> FakeEngineSetup:
    trt = fakes.make_fake_tensorrt("11.4.0.106")
    ctx = fakes.fake_context(trt)
    lean = fakes.lean
    inputs, outputs = fakes.decoder_io(layers=1)
    dims = parse_dims(SMALL_DIMS)
    profiles = derive_profiles("decoder", parse_tensor_specs(inputs), dims)
    io = [(s["name"], True, s) for s in inputs] + [(s["name"], False, s) for s in outputs]
    dtypes = {"float32": lean.DataType.FLOAT, "int64": lean.DataType.INT64}
    np_dtypes = {n: np.dtype(s["dtype"]) for n, _, s in io}

    engine = fakes.strict_autospec(lean.ICudaEngine)
    engine.num_io_tensors = len(io)
    engine.num_optimization_profiles = len(profiles)
    fakes.implement(engine.get_tensor_name, lambda index: io[index][0])
    fakes.implement(engine.get_tensor_mode, lambda name: lean.TensorIOMode.INPUT if dict((n, i) for n, i, _ in io)[name] else lean.TensorIOMode.OUTPUT)
    fakes.implement(engine.get_tensor_dtype, lambda name: dtypes[dict((n, s) for n, _, s in io)[name]["dtype"]])
    fakes.implement(
        engine.get_tensor_shape,
        lambda name: lean.Dims([d if isinstance(d, int) else -1 for d in dict((n, s) for n, _, s in io)[name]["shape"]]),
    )
    fakes.implement(
        engine.get_tensor_profile_shape,
        lambda name, profile_index: [lean.Dims(list(s)) for s in (
            profiles[profile_index].shapes[name].min, profiles[profile_index].shapes[name].opt, profiles[profile_index].shapes[name].max)],
    )
    contexts: list = []

    def make_context(*args, **kwargs):
        state = {"profile": 0, "shapes": {}, "addresses": {}, "runs": 0}

        def set_profile(profile_index, stream_handle):
            assert stream_handle == STREAM
            state["profile"] = profile_index
            return True

        def set_input_shape(name, shape):
            rng = profiles[state["profile"]].shapes[name]
            state["shapes"][name] = tuple(shape)
            return rng.contains(tuple(shape))

        def set_tensor_address(name, memory):
            assert isinstance(memory, int) and memory != 0
            state["addresses"][name] = memory
            return True

        def get_tensor_shape(name):
            s = state["shapes"]
            b, seq, _ = s["inputs_embeds"]
            past = s["past_key_values.0.key"][2]
            if name == "logits":
                return lean.Dims([b, seq, 16])
            if name.startswith("present."):
                return lean.Dims([b, 2, past + seq, 4])
            return lean.Dims(list(s[name]))

        def execute(stream_handle):
            assert stream_handle == STREAM
            feed = {n: fakes.read_address(state["addresses"][n], state["shapes"][n], np_dtypes[n]) for n, is_in, _ in io if is_in}
            for name, value in reference(feed).items():
                fakes.write_address(state["addresses"][name], value)
            state["runs"] += 1
            return True

        context = fakes.execution_context(set_profile=set_profile, set_input_shape=set_input_shape,
                                          set_tensor_address=set_tensor_address, get_tensor_shape=get_tensor_shape,
                                          execute=execute)
        contexts.append((context, state))
        return context

    fakes.implement(engine.create_execution_context, make_context)

    runtime = fakes.strict_autospec(lean.Runtime)
    fakes.implement(runtime.deserialize_cuda_engine, lambda serialized_engine: engine if read_plan(trt, serialized_engine) else None)
    trt._state.runtime = runtime

    engine_path = tmp_path / "out" / "engines" / "decoder.fp16.engine"
    engine_path.parent.mkdir(parents=True)
    engine_path.write_bytes(b"FAKE-PLAN")
    manifest = EngineManifest(
        component="decoder", precision="fp16", engine_file=engine_path.name, engine_sha256=sha256_file(engine_path),
        engine_size=9, onnx_file="onnx/fp16/decoder.onnx", onnx_sha256="0" * 64, tensorrt_version="11.4.0.106",
        gpu_name="NVIDIA GeForce RTX 4090", compute_capability="8.9", cuda_version="12.8", profiles=profiles,
    )
    write_manifest(manifest, engine_path)
    return FakeEngineSetup(trt, ctx, engine, contexts, engine_path, manifest, profiles)


def feed(seq: int, past: int, batch: int = 1, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "inputs_embeds": rng.standard_normal((batch, seq, 8)).astype(np.float32),
        "attention_mask": np.ones((batch, past + seq), dtype=np.int64),
        "rope_cos": rng.standard_normal((batch, seq, 4)).astype(np.float32),
        "rope_sin": rng.standard_normal((batch, seq, 4)).astype(np.float32),
        "past_key_values.0.key": rng.standard_normal((batch, 2, past, 4)).astype(np.float32),
        "past_key_values.0.value": rng.standard_normal((batch, 2, past, 4)).astype(np.float32),
    }


def runner_for(setup: FakeEngineSetup, **kwargs) -> TensorRTRunner:
    kwargs.setdefault("backend", cpu_backend())
    return TensorRTRunner(setup.engine_path, ctx=setup.ctx, **kwargs)


def assert_outputs(actual: dict, expected: dict) -> None:
    assert list(actual) == ["logits", "present.0.key", "present.0.value"]
    for name, value in expected.items():
        np.testing.assert_allclose(np.asarray(actual[name]), value, rtol=1e-6, atol=1e-6)


def test_is_a_polygraphy_runner_with_input_metadata(setup):
    runner = runner_for(setup)
    assert isinstance(runner, BaseRunner)
    with runner:
        meta = runner.get_input_metadata(use_numpy_dtypes=False)
        assert list(meta) == list(feed(1, 0))
        assert list(meta["inputs_embeds"].shape) == [None, None, 8]
        assert list(meta["past_key_values.0.key"].shape) == [None, 2, None, 4]
        assert meta["attention_mask"].dtype.name == "int64"


def test_prefill_then_decode_selects_profiles_and_computes_through_addresses(setup):
    with runner_for(setup) as runner:
        prefill = feed(seq=5, past=0)
        out = runner.infer(prefill)  # Polygraphy's infer: checks inputs against the metadata, then infer_impl
        assert_outputs(out, reference(prefill))
        context, state = setup.contexts[0]
        context.set_optimization_profile_async.assert_not_called()  # profile 0 (prefill) is the default
        assert {c.args[0]: c.args[1] for c in context.set_input_shape.call_args_list} == {k: v.shape for k, v in prefill.items()}
        assert set(state["addresses"]) == set(prefill) | {"logits", "present.0.key", "present.0.value"}
        context.execute_async_v3.assert_called_once_with(STREAM)

        decode = feed(seq=1, past=5, seed=1)
        assert_outputs(runner.infer(decode), reference(decode))
        context.set_optimization_profile_async.assert_called_once_with(1, STREAM)
        runner.infer(feed(seq=1, past=6, seed=2))
        assert context.set_optimization_profile_async.call_count == 1  # already on decode
        runner.infer(feed(seq=3, past=0, seed=3))
        assert context.set_optimization_profile_async.call_args.args == (0, STREAM)
        assert runner.last_inference_time() is not None


def test_torch_tensors_in_give_torch_tensors_out(setup):
    with runner_for(setup) as runner:
        data = feed(seq=2, past=0)
        out = runner.infer({k: torch.from_numpy(v) for k, v in data.items()})
        assert all(isinstance(v, torch.Tensor) for v in out.values())
        assert_outputs({k: v.numpy() for k, v in out.items()}, reference(data))
        device_out = runner.infer(data, copy_outputs_to_host=False)
        assert all(isinstance(v, torch.Tensor) for v in device_out.values())


def test_shapes_outside_every_profile_are_refused_before_tensorrt(setup):
    with runner_for(setup) as runner:
        with pytest.raises(ShapeError, match="no optimization profile accepts"):
            runner.infer(feed(seq=4, past=33), check_inputs=False)  # past beyond every profile's max
        with pytest.raises(ShapeError, match="no optimization profile accepts"):
            runner.infer(feed(seq=17, past=0), check_inputs=False)
        context, _ = setup.contexts[0]
        context.execute_async_v3.assert_not_called()


def test_missing_unknown_and_mistyped_inputs(setup):
    with runner_for(setup) as runner:
        data = feed(seq=2, past=0)
        with pytest.raises(ShapeError, match="missing inputs rope_sin"):
            runner.infer({k: v for k, v in data.items() if k != "rope_sin"}, check_inputs=False)
        with pytest.raises(ShapeError, match="unknown inputs input_ids"):
            runner.infer({**data, "input_ids": np.zeros((1, 2), np.int64)}, check_inputs=False)
        with pytest.raises(ShapeError, match="inputs_embeds has dtype float64"):
            runner.infer({**data, "inputs_embeds": data["inputs_embeds"].astype(np.float64)}, check_inputs=False)


def test_mismatched_manifest_is_refused_before_deserializing(setup):
    write_manifest(dataclasses.replace(setup.manifest, tensorrt_version="10.3.0.30"), setup.engine_path)
    with pytest.raises(EngineCompatibilityError) as info:
        runner_for(setup).activate()
    text = str(info.value)
    assert "built with TensorRT 10.3.0.30" in text and "this machine has TensorRT 11.4.0.106" in text
    assert f"autoglm-trt build {setup.engine_path.parent.parent} --fp16" in text
    setup.trt._state.runtime.deserialize_cuda_engine.assert_not_called()

    write_manifest(dataclasses.replace(setup.manifest, compute_capability="8.7", gpu_name="Orin (nvgpu)"), setup.engine_path)
    with pytest.raises(EngineCompatibilityError, match="compute capability differs"):
        runner_for(setup).activate()
    setup.trt._state.runtime.deserialize_cuda_engine.assert_not_called()


def test_replaced_engine_or_missing_manifest_is_refused(setup):
    setup.engine_path.write_bytes(b"ANOTHER-PLAN")
    with pytest.raises(EngineCompatibilityError, match="does not match its manifest"):
        runner_for(setup).activate()
    manifest_path_for(setup.engine_path).unlink()
    with pytest.raises(EngineCompatibilityError, match="has no manifest"):
        runner_for(setup).activate()
    assert setup.trt._state.runtime is None or not setup.trt._state.runtime.deserialize_cuda_engine.called


def test_same_size_other_content_is_caught_by_sha256(setup):
    setup.engine_path.write_bytes(b"EVIL-PLAN")  # same size as b"FAKE-PLAN"
    with pytest.raises(EngineCompatibilityError, match="sha256"):
        runner_for(setup).activate()
    setup.trt._state.runtime.deserialize_cuda_engine.assert_not_called()
    with runner_for(setup, verify_sha256=False):  # opt-out for very large engines: size only
        pass


def test_tensorrt_refusing_the_plan_is_an_engine_error(setup, fakes):
    fakes.implement(setup.trt._state.runtime.deserialize_cuda_engine, lambda serialized_engine: None)
    with pytest.raises(EngineCompatibilityError, match="could not deserialize"):
        runner_for(setup).activate()


def test_profile_count_must_match_the_manifest(setup):
    setup.engine.num_optimization_profiles = 1
    with pytest.raises(EngineCompatibilityError, match="has 1 optimization profiles but its manifest lists 3"):
        runner_for(setup).activate()


def test_version_compatible_engines_allow_host_code(setup):
    write_manifest(dataclasses.replace(setup.manifest, version_compatible=True), setup.engine_path)
    with runner_for(setup):
        assert setup.trt._state.runtime.engine_host_code_allowed is True


def test_removed_or_misspelt_tensorrt_calls_fail_against_the_real_classes(setup, fakes):
    context = fakes.strict_autospec(fakes.lean.IExecutionContext)
    engine = fakes.strict_autospec(fakes.lean.ICudaEngine)
    for name in ("execute_async_v2", "execute_async", "set_binding_shape", "get_binding_shape", "set_optimization_profile"):
        with pytest.raises(AttributeError):
            getattr(context, name)
    for name in ("num_bindings", "get_binding_index", "binding_is_input", "max_batch_size", "device_memory_size"):
        with pytest.raises(AttributeError):
            getattr(engine, name)
    with pytest.raises(TypeError, match="matches no signature"):
        context.execute_async_v3()  # stream handle missing
    with pytest.raises(TypeError, match="matches no signature"):
        context.set_tensor_address("logits")
    with pytest.raises(TypeError, match="matches no signature"):
        engine.get_tensor_profile_shape("inputs_embeds")
    with pytest.raises(AttributeError):
        context.not_a_property = 1  # spec_set: properties must exist


def test_deactivate_restores_the_runner_state(setup):
    runner = runner_for(setup)
    before = dict(vars(runner))
    runner.activate()
    runner.infer(feed(seq=2, past=0))
    runner.deactivate()
    after = dict(vars(runner))
    assert after.keys() == before.keys()


class GraphBackend(TorchDeviceBackend):
    """CPU stand-in for torch.cuda.graph: capture records the launch, replay re-runs it."""

    def __init__(self) -> None:
        super().__init__("cpu", stream=FakeStream())
        self.captures = 0
        self.replays = 0

    def capture(self, launch):
        self.captures += 1
        return launch

    def replay(self, graph) -> None:
        self.replays += 1
        assert graph()


def test_cuda_graph_captures_decode_steps_per_shape(setup):
    backend = GraphBackend()
    with runner_for(setup, backend=backend, cuda_graph=True, max_graphs=1) as runner:
        runner.infer(feed(seq=3, past=0))  # prefill: never captured
        assert backend.captures == 0 and len(setup.contexts) == 1
        first = feed(seq=1, past=4, seed=1)
        assert_outputs(runner.infer(first), reference(first))
        assert backend.captures == 1 and len(setup.contexts) == 2  # dedicated context for the graph
        graph_context, graph_state = setup.contexts[1]
        graph_context.set_optimization_profile_async.assert_called_once_with(1, STREAM)
        second = feed(seq=1, past=4, seed=2)  # same shapes: replay with new data copied into the static inputs
        assert_outputs(runner.infer(second), reference(second))
        assert backend.captures == 1 and backend.replays == 1
        third = feed(seq=1, past=5, seed=3)  # new shape: new graph, the old one is evicted (max_graphs=1)
        assert_outputs(runner.infer(third), reference(third))
        assert backend.captures == 2 and len(runner._graphs) == 1


def test_cuda_graphs_need_the_torch_backend(setup):
    backend = CudaPythonDeviceBackend(FakeCudart())
    with pytest.raises(ConfigError, match="cuda_graph=True needs the torch device backend"):
        runner_for(setup, backend=backend, cuda_graph=True).activate()


class FakeCudart:
    """cuda.bindings.runtime stand-in: host memory from ctypes, same call shapes as cuda-python."""

    class cudaMemcpyKind:  # noqa: N801
        cudaMemcpyHostToDevice = 1
        cudaMemcpyDeviceToHost = 2

    def __init__(self) -> None:
        self.buffers: dict[int, ctypes.Array] = {}
        self.calls: list[str] = []

    def cudaSetDevice(self, device):  # noqa: N802
        self.calls.append(f"cudaSetDevice:{device}")
        return (0,)

    def cudaStreamCreate(self):  # noqa: N802
        self.calls.append("cudaStreamCreate")
        return (0, STREAM)

    def cudaMalloc(self, size):  # noqa: N802
        buffer = ctypes.create_string_buffer(size)
        self.buffers[ctypes.addressof(buffer)] = buffer
        self.calls.append("cudaMalloc")
        return (0, ctypes.addressof(buffer))

    def cudaFree(self, ptr):  # noqa: N802
        del self.buffers[ptr]
        self.calls.append("cudaFree")
        return (0,)

    def cudaMemcpyAsync(self, dst, src, count, kind, stream):  # noqa: N802
        assert stream == STREAM
        ctypes.memmove(dst, src, count)
        self.calls.append(f"cudaMemcpyAsync:{kind}")
        return (0,)

    def cudaStreamSynchronize(self, stream):  # noqa: N802
        return (0,)

    def cudaStreamDestroy(self, stream):  # noqa: N802
        self.calls.append("cudaStreamDestroy")
        return (0,)


def test_cuda_python_backend(setup):
    cudart = FakeCudart()
    with runner_for(setup, backend=CudaPythonDeviceBackend(cudart)) as runner:
        for data in (feed(seq=4, past=0), feed(seq=1, past=4, seed=5)):
            assert_outputs(runner.infer(data), reference(data))
        with pytest.raises(ConfigError, match="torch tensors need the torch device backend"):
            runner.infer({k: torch.from_numpy(v) for k, v in feed(seq=2, past=0).items()}, check_inputs=False)
    assert cudart.calls[-1] == "cudaStreamDestroy"
    assert cudart.buffers == {}  # everything freed


def test_component_runners_for_generation(setup, tmp_path, fakes):
    out = setup.engine_path.parent.parent
    with pytest.raises(EngineCompatibilityError, match="vision_encoder.fp16.engine not found") as info:
        trt_component_runners(out, "fp16", ctx=setup.ctx)
    assert f"autoglm-trt build {out} --fp16" in str(info.value)
    vision_engine = out / "engines" / "vision_encoder.fp16.engine"
    vision_engine.write_bytes(b"VISION")
    write_manifest(dataclasses.replace(setup.manifest, component="vision_encoder", engine_file=vision_engine.name,
                                       engine_sha256=sha256_file(vision_engine)), vision_engine)
    vision, decoder = trt_component_runners(out, "fp16", ctx=setup.ctx, cuda_graph=True)
    assert (vision.engine_path, decoder.engine_path) == (vision_engine, setup.engine_path)
    assert not vision.cuda_graph and decoder.cuda_graph


class FakeInspector:
    """IEngineInspector (not in the lean bindings): execution_context, get_layer_information, get_engine_information."""

    def __init__(self) -> None:
        self.execution_context = None

    def get_layer_information(self, layer_index, format):  # noqa: A002
        raise AssertionError("inspect uses get_engine_information")

    def get_engine_information(self, format):  # noqa: A002
        assert format.name == "JSON"
        return json.dumps({"Layers": [
            {"Name": "lm_head", "LayerType": "CaskGemm", "Outputs": [{"Name": "logits", "Format/Datatype": "Row major linear FP16"}],
             "TacticName": "sm89_xmma_gemm"},
            {"Name": "layers.0.key_cache", "LayerType": "Concat", "Outputs": [], "TacticValue": "0x0"},
            "plain_layer_name",
        ], "Bindings": ["inputs_embeds", "logits"]})


def test_inspect_reports_manifest_io_profiles_and_layers(setup, fakes, monkeypatch):
    from trt_pipeline.cli import app
    from trt_pipeline.engine.inspect import inspect_engine

    fakes.implement(setup.engine.create_engine_inspector, lambda: FakeInspector())
    report = inspect_engine(setup.engine_path, ctx=setup.ctx)
    assert report.manifest == read_manifest(setup.engine_path)
    assert [layer.name for layer in report.layers] == ["lm_head", "layers.0.key_cache", "plain_layer_name"]
    assert report.layers[0].precision == "Row major linear FP16" and report.layers[0].tactic == "sm89_xmma_gemm"
    assert [p.name for p in report.engine_profiles] == ["prefill", "decode", "append"]
    assert report.engine_profiles[1].shapes["inputs_embeds"] == setup.profiles[1].shapes["inputs_embeds"]
    assert not report.warnings
    assert {item["name"]: item["mode"] for item in report.io}["logits"] == "output"

    monkeypatch.setattr(tr, "require_tensorrt", lambda device_index=0: setup.ctx)
    result = CliRunner().invoke(app, ["inspect", str(setup.engine_path)])
    assert result.exit_code == 0, result.output
    for text in ("11.4.0.106", "prefill", "decode", "lm_head", "CaskGemm", "logits"):
        assert text in result.stdout
    result = CliRunner().invoke(app, ["inspect", str(setup.engine_path), "--json"])
    assert json.loads(result.stdout)["layers"][0]["name"] == "lm_head"


def test_inspect_refuses_a_mismatched_engine(setup, monkeypatch):
    from trt_pipeline.cli import app

    write_manifest(dataclasses.replace(setup.manifest, tensorrt_version="10.3.0.30"), setup.engine_path)
    monkeypatch.setattr(tr, "require_tensorrt", lambda device_index=0: setup.ctx)
    result = CliRunner().invoke(app, ["inspect", str(setup.engine_path)])
    assert result.exit_code == 7
    assert "built with TensorRT 10.3.0.30" in result.stderr and "autoglm-trt build" in result.stderr


def test_execute_failure_is_reported(setup, fakes):
    with runner_for(setup) as runner:
        context, _ = setup.contexts[0]
        fakes.implement(context.execute_async_v3, lambda stream_handle: False)
        with pytest.raises(PipelineError, match="execute_async_v3 failed"):
            runner.infer(feed(seq=2, past=0))


def test_cuda_python_backend_frees_every_output_buffer(setup):
    """Review failure 6: owned buffers grew 3, 6, 9, ... (outputs were freed only at close)."""
    cudart = FakeCudart()
    backend = CudaPythonDeviceBackend(cudart)
    with runner_for(setup, backend=backend) as runner:
        for step in range(5):
            data = feed(seq=1, past=4 + step, seed=step)
            mallocs, frees = cudart.calls.count("cudaMalloc"), cudart.calls.count("cudaFree")
            assert_outputs(runner.infer(data), reference(data))
            allocated = cudart.calls.count("cudaMalloc") - mallocs
            assert allocated == len(data) + 3  # every input and the three outputs ...
            assert cudart.calls.count("cudaFree") - frees == allocated  # ... are freed in the same call
            assert backend._owned == [] and cudart.buffers == {}


def test_device_index_selects_the_cuda_device_before_deserializing(setup, fakes, monkeypatch):
    """Review failure 8: device_index=N built/deserialized on device 0 with buffers on device N."""
    from trt_pipeline.engine import tensorrt_import

    cudart = FakeCudart()
    monkeypatch.setattr(tensorrt_import, "import_cudart", lambda: cudart)
    ctx = dataclasses.replace(setup.ctx, gpu=dataclasses.replace(setup.ctx.gpu, device_index=2))
    fakes.implement(setup.trt._state.runtime.deserialize_cuda_engine,
                    lambda serialized_engine: (cudart.calls.append("deserialize"), setup.engine)[1])
    backend = CudaPythonDeviceBackend(cudart, device_index=2)
    with TensorRTRunner(setup.engine_path, ctx=ctx, device_index=2, backend=backend):
        pass
    assert cudart.calls.index("cudaSetDevice:2") < cudart.calls.index("deserialize")
    assert {c for c in cudart.calls if c.startswith("cudaSetDevice")} == {"cudaSetDevice:2"}


class RecordingBackend(TorchDeviceBackend):
    """Records the order of producer waits, uploads and launches."""

    def __init__(self, log: list) -> None:
        super().__init__("cpu", stream=FakeStream())
        self.log = log

    def wait_for_producers(self) -> None:
        self.log.append("wait")

    def upload(self, value, info):
        self.log.append("upload")
        return super().upload(value, info)

    def copy_into(self, dst, value, info) -> None:
        self.log.append("copy")
        super().copy_into(dst, value, info)


def test_producers_are_awaited_before_inputs_are_uploaded(setup, fakes):
    """The caller's stream may still be writing the inputs: the runner's stream waits before copying them."""
    log: list = []
    with runner_for(setup, backend=RecordingBackend(log)) as runner:
        context, _ = setup.contexts[0]
        original = context.execute_async_v3.side_effect
        fakes.implement(context.execute_async_v3, lambda stream_handle: (log.append("execute"), original(stream_handle))[1])
        runner.infer(feed(seq=2, past=0))
    first_copy = min(i for i, event in enumerate(log) if event in ("upload", "copy"))
    assert log[0] == "wait" and first_copy > 0 and log[-1] == "execute"


class FailingCaptureBackend(GraphBackend):
    def capture(self, launch):
        self.captures += 1
        raise RuntimeError("operation not permitted when stream is capturing")


def test_cuda_graph_capture_failure_falls_back_to_plain_execution(setup):
    backend = FailingCaptureBackend()
    with runner_for(setup, backend=backend, cuda_graph=True) as runner:
        for seed in range(3):
            data = feed(seq=1, past=4, seed=seed)
            assert_outputs(runner.infer(data), reference(data))
        assert backend.captures == 1 and not runner._graphs  # tried once per shape, then plain launches
        assert len(runner.graph_fallbacks) == 1 and "stream is capturing" in runner.graph_fallbacks[0]


def test_cuda_graph_inputs_are_runner_owned_static_buffers(setup):
    backend = GraphBackend()
    with runner_for(setup, backend=backend, cuda_graph=True) as runner:
        data = {k: torch.from_numpy(v) for k, v in feed(seq=1, past=4, seed=1).items()}
        runner.infer(data)
        (entry,) = runner._graphs.values()
        for name, tensor in data.items():
            assert entry.inputs[name].data_ptr() != tensor.data_ptr()  # a copy the graph owns, not the caller's


@pytest.mark.parametrize("version, streamed", [("11.4.0.106", True), ("10.8.0.43", True), ("10.3.0.30", False)])
def test_engine_plan_is_streamed_in_chunks_or_memory_mapped(setup, fakes, monkeypatch, version, streamed):
    """Review failure 5: no full host copy of the plan; IStreamReaderV2 where TensorRT has it, else an mmap."""
    from trt_pipeline.runtime import plan_stream

    trt = fakes.make_fake_tensorrt(version)
    runtime = fakes.strict_autospec(fakes.lean.Runtime)
    received, chunks = [], []
    fakes.implement(runtime.deserialize_cuda_engine,
                    lambda source: (received.append((type(source), read_plan(trt, source, chunks))), setup.engine)[1])
    trt._state.runtime = runtime
    plan = bytes(range(256)) * 40  # 10 KiB
    setup.engine_path.write_bytes(plan)
    write_manifest(dataclasses.replace(setup.manifest, tensorrt_version=version, engine_size=len(plan),
                                       engine_sha256=sha256_file(setup.engine_path)), setup.engine_path)
    monkeypatch.setattr(plan_stream, "CHUNK", 4096)
    load_engine(setup.engine_path, ctx=fakes.fake_context(trt))
    ((kind, data),) = received
    assert data == plan
    if streamed:
        assert issubclass(kind, trt.IStreamReaderV2) and chunks == [4096, 4096, 2048]
    else:
        assert kind is memoryview


def test_every_tensorrt_data_type_is_mapped(fakes):
    """FP8/INT4/FP4 were unmapped (KeyError); now FP8 maps to torch's E4M3 and packed types fail with a message."""
    from trt_pipeline.runtime.tensorrt_runner import NUMPY_DTYPES, TORCH_DTYPES, TensorInfo

    assert set(fakes.lean.DataType.__members__) <= set(NUMPY_DTYPES)
    backend = cpu_backend()
    assert backend.torch_dtype(TensorInfo("x", True, "FP8", (1,))) == torch.float8_e4m3fn
    assert TORCH_DTYPES["HALF"] == "float16"
    with pytest.raises(PipelineError, match="INT4, which has no torch/NumPy buffer type"):
        backend.torch_dtype(TensorInfo("w", True, "INT4", (1,)))
