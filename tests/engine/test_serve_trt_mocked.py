"""``autoglm-trt serve --backend trt`` end to end on a machine without a GPU: the real build, runner,
serve engine and HTTP server, over a fake TensorRT whose engines compute with the export's ONNX.

The engines come from the real :func:`~trt_pipeline.engine.builder.build_engines` against the fake
builder (profiles and manifests as on a GPU host); the fake runtime's ``ICudaEngine`` /
``IExecutionContext`` are strict autospecs of the real TensorRT 11.4 classes whose "kernels" run the
tiny export's ONNX graph in ONNX Runtime on the bytes at the device addresses the runner binds (CPU
torch tensors stand in for device memory). So everything serve does with TensorRT (profile choice
per prefill/decode/append call, shapes, buffers, output shapes, the stepper's feeds, batching) runs
for real, and the replies must equal the ORT backend's token for token.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_tensorrt_runner_mocked import STREAM, FakeStream, read_plan

MODEL = "autoglm-phone-9b"


def _onnx_engine(fakes: Any, onnx_path: Path, profiles: Any) -> tuple[Any, list[str]]:
    """A strict-autospec ICudaEngine over ``onnx_path`` (its execution contexts run it in ONNX Runtime),
    and the list that records the profile of every execution."""
    import onnxruntime as ort

    lean = fakes.lean
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    dtypes = {"tensor(float)": (lean.DataType.FLOAT, np.float32), "tensor(int64)": (lean.DataType.INT64, np.int64)}
    io = [(node, True) for node in session.get_inputs()] + [(node, False) for node in session.get_outputs()]
    by_name = {node.name: (node, is_input) for node, is_input in io}
    engine = fakes.strict_autospec(lean.ICudaEngine)
    engine.num_io_tensors = len(io)
    engine.num_optimization_profiles = len(profiles)
    fakes.implement(engine.get_tensor_name, lambda index: io[index][0].name)
    fakes.implement(engine.get_tensor_mode, lambda name: lean.TensorIOMode.INPUT if by_name[name][1] else lean.TensorIOMode.OUTPUT)
    fakes.implement(engine.get_tensor_dtype, lambda name: dtypes[by_name[name][0].type][0])
    fakes.implement(engine.get_tensor_shape,
                    lambda name: lean.Dims([d if isinstance(d, int) else -1 for d in by_name[name][0].shape]))
    fakes.implement(engine.get_tensor_profile_shape, lambda name, profile_index: [
        lean.Dims(list(s)) for s in (profiles[profile_index].shapes[name].min, profiles[profile_index].shapes[name].opt,
                                     profiles[profile_index].shapes[name].max)])
    runs: list[str] = []

    def make_context(*args: Any, **kwargs: Any) -> Any:
        state: dict[str, Any] = {"profile": 0, "shapes": {}, "addresses": {}, "outputs": None}

        def set_profile(profile_index: int, stream_handle: int) -> bool:
            assert stream_handle == STREAM
            state["profile"] = profile_index
            return True

        def set_input_shape(name: str, shape: Any) -> bool:
            state["shapes"][name], state["outputs"] = tuple(shape), None
            return profiles[state["profile"]].shapes[name].contains(tuple(shape))  # TensorRT refuses outside it

        def set_tensor_address(name: str, memory: int) -> bool:
            state["addresses"][name] = memory
            state["outputs"] = None if by_name[name][1] else state["outputs"]
            return True

        def outputs() -> dict[str, np.ndarray]:
            """ONNX Runtime on the bound inputs (TensorRT resolves output shapes before it runs)."""
            if state["outputs"] is None:
                feed = {node.name: fakes_read(node) for node, is_input in io if is_input}
                state["outputs"] = dict(zip([n.name for n in session.get_outputs()], session.run(None, feed)))
            return state["outputs"]

        def fakes_read(node: Any) -> np.ndarray:
            return fakes.read_address(state["addresses"][node.name], state["shapes"][node.name], dtypes[node.type][1])

        def get_tensor_shape(name: str) -> Any:
            return lean.Dims(list(outputs()[name].shape if not by_name[name][1] else state["shapes"][name]))

        def execute(stream_handle: int) -> bool:
            assert stream_handle == STREAM
            for name, value in outputs().items():
                fakes.write_address(state["addresses"][name], value)
            runs.append(profiles[state["profile"]].name)
            state["outputs"] = None
            return True

        return fakes.execution_context(set_profile=set_profile, set_input_shape=set_input_shape,
                                       set_tensor_address=set_tensor_address, get_tensor_shape=get_tensor_shape,
                                       execute=execute)

    fakes.implement(engine.create_execution_context, make_context)
    return engine, runs


@pytest.fixture
def trt_export(tiny_export: Path, tmp_path: Path, fakes: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict[str, list[str]]]:
    """A copy of the tiny export with fp32 engines from the real build (fake TensorRT 11.4), and the
    runtime side patched in: the fake context, CPU tensors as device memory."""
    from trt_pipeline.engine.builder import build_engines
    from trt_pipeline.engine.manifest import read_manifest
    from trt_pipeline.engine.options import BuildConfig
    from trt_pipeline.runtime import tensorrt_runner

    out = tmp_path / "tiny"
    shutil.copytree(tiny_export, out)
    trt = fakes.make_fake_tensorrt("11.4.0.106")
    ctx = fakes.fake_context(trt)
    results = build_engines(BuildConfig(out, precision="fp32"), ctx=ctx, show_progress=False)
    engines = {result.component: _onnx_engine(fakes, out / read_manifest(result.engine_path).onnx_file,
                                              result.manifest.profiles) for result in results}

    def deserialize(serialized_engine: Any) -> Any:
        summary = json.loads(read_plan(trt, serialized_engine).removeprefix(b"FAKE-ENGINE"))
        return engines[Path(summary["onnx"]).stem][0]

    runtime = fakes.strict_autospec(fakes.lean.Runtime)
    fakes.implement(runtime.deserialize_cuda_engine, deserialize)
    trt._state.runtime = runtime
    monkeypatch.setattr(tensorrt_runner, "require_tensorrt", lambda device_index=0: ctx)
    monkeypatch.setattr(tensorrt_runner, "default_backend",
                        lambda device_index=0: tensorrt_runner.TorchDeviceBackend("cpu", stream=FakeStream()))
    return out, {component: runs for component, (_engine, runs) in engines.items()}


def test_serve_backend_trt_replies_like_ort(trt_export: tuple[Path, dict]) -> None:
    """Greedy replies over HTTP (a text request, and two agent requests at once so the decode batch
    holds two rows) are token for token those of the ORT backend, with TensorRT's three profiles used."""
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    from trt_pipeline.serve.app import create_app
    from trt_pipeline.serve.chat import MediaPolicy
    from trt_pipeline.serve.launch import ThreadedServer
    from trt_pipeline.serve.media import encode_data_url
    from trt_pipeline.serve.model import ServeConfig

    out, profile_runs = trt_export
    image = encode_data_url(Image.new("RGB", (56, 84), (200, 30, 30)))
    bodies = [[{"role": "user", "content": "Open the settings app."}]] + [
        [{"role": "system", "content": "You are a phone agent."},
         {"role": "user", "content": [{"type": "image_url", "image_url": {"url": image}},
                                      {"type": "text", "text": f"Step {step}: tap the icon."}]}] for step in (1, 2)]

    def replies(backend: str) -> list[tuple[str, int]]:
        config = ServeConfig(out=out, backend=backend, precision="fp32", prefill_chunk=8, media=MediaPolicy(max_pixels=200_000))
        with ThreadedServer(create_app(config)) as server:
            assert server.app.state.serve.model.engine.backend == backend
            client = server.client()

            def ask(messages: list[dict]) -> tuple[str, int]:
                reply = client.chat.completions.create(model=MODEL, messages=messages, temperature=0, max_tokens=12)
                return reply.choices[0].message.content, reply.usage.completion_tokens

            first = ask(bodies[0])
            with ThreadPoolExecutor(2) as pool:
                return [first, *pool.map(ask, bodies[1:])]

    trt = replies("trt")
    assert set(profile_runs["decoder"]) == {"prefill", "decode", "append"}  # chunks of 8 append
    assert profile_runs["vision_encoder"] == ["image"] * 2
    assert trt == replies("ort")
    assert all(tokens == 12 for _text, tokens in trt) and len({text for text, _ in trt}) == 3
