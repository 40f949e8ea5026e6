"""The TensorRT runner under the stepper on an ``--kv-cache inplace`` decoder (fake TensorRT, real graph).

The fake engine has the I/O and the profiles of the tiny inplace export's decoder (from its
export.json, as ``build`` derives them) and computes through the addresses the runner binds by
running that decoder's ONNX on ONNX Runtime. So the runner's profile choice, its input shapes
(``[B, past + S, kv * D]`` caches), output shapes (``present.*`` as the cache input) and the
stepper's arena views going in as inputs are exercised for real; TensorRT's own kernels are not
(no GPU here).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from trt_pipeline.artifacts import read_export_manifest, sha256_file
from trt_pipeline.engine.manifest import EngineManifest, write_manifest
from trt_pipeline.engine.profiles import derive_profiles
from trt_pipeline.runtime.tensorrt_runner import TensorRTRunner

from test_tensorrt_runner_mocked import STREAM, cpu_backend, read_plan


@dataclasses.dataclass
class InplaceEngine:
    engine_path: Path
    ctx: object
    contexts: list
    profile_names: list[str]


def _resolve(shape, known: dict[str, int]) -> list[int]:
    return [d if isinstance(d, int) else known[d] for d in shape]


@pytest.fixture
def inplace_engine(tiny_inplace_export: Path, tmp_path: Path, fakes) -> InplaceEngine:
    from trt_pipeline.runtime.onnxruntime_runner import onnx_path, session

    trt, lean = fakes.make_fake_tensorrt("11.4.0.106"), fakes.lean
    ctx = fakes.fake_context(trt)
    manifest = read_export_manifest(tiny_inplace_export)
    entry = manifest.components["decoder"]
    profiles = derive_profiles("decoder", entry.inputs, manifest.dims)
    io = [(s, True) for s in entry.inputs] + [(s, False) for s in entry.outputs]
    specs = {s.name: s for s, _ in io}
    dtypes = {"float32": lean.DataType.FLOAT, "int64": lean.DataType.INT64}
    graph = session(onnx_path(tiny_inplace_export, "fp32", "decoder"))

    engine = fakes.strict_autospec(lean.ICudaEngine)
    engine.num_io_tensors, engine.num_optimization_profiles = len(io), len(profiles)
    fakes.implement(engine.get_tensor_name, lambda index: io[index][0].name)
    fakes.implement(engine.get_tensor_mode, lambda name: lean.TensorIOMode.INPUT if dict((s.name, i) for s, i in io)[name]
                    else lean.TensorIOMode.OUTPUT)
    fakes.implement(engine.get_tensor_dtype, lambda name: dtypes[specs[name].dtype])
    fakes.implement(engine.get_tensor_shape, lambda name: lean.Dims([d if isinstance(d, int) else -1 for d in specs[name].shape]))
    fakes.implement(engine.get_tensor_profile_shape, lambda name, profile_index: [
        lean.Dims(list(getattr(profiles[profile_index].shapes[name], kind))) for kind in ("min", "opt", "max")])
    contexts: list = []

    def make_context(*args, **kwargs):
        state = {"profile": 0, "shapes": {}, "addresses": {}, "profiles_used": []}

        def set_profile(profile_index, stream_handle):
            state["profile"] = profile_index
            return True

        def set_input_shape(name, shape):
            state["shapes"][name] = tuple(shape)
            return profiles[state["profile"]].shapes[name].contains(tuple(shape))

        def set_tensor_address(name, memory):
            state["addresses"][name] = memory
            return True

        def known() -> dict[str, int]:
            sizes = {}
            for name, shape in state["shapes"].items():
                sizes.update((d, v) for d, v in zip(specs[name].shape, shape) if isinstance(d, str))
            return sizes

        def get_tensor_shape(name):
            return lean.Dims(_resolve(specs[name].shape, known()) if name not in state["shapes"] else list(state["shapes"][name]))

        def execute(stream_handle):
            feed = {s.name: fakes.read_address(state["addresses"][s.name], state["shapes"][s.name], np.dtype(s.dtype))
                    for s, is_input in io if is_input}
            names = [s.name for s, is_input in io if not is_input]
            for name, value in zip(names, graph.run(names, feed)):
                fakes.write_address(state["addresses"][name], value)
            state["profiles_used"].append(profiles[state["profile"]].name)
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
    engine_path = tmp_path / "out" / "engines" / "decoder.fp32.engine"
    engine_path.parent.mkdir(parents=True)
    engine_path.write_bytes(b"FAKE-INPLACE-PLAN")
    write_manifest(EngineManifest(
        component="decoder", precision="fp32", engine_file=engine_path.name, engine_sha256=sha256_file(engine_path),
        engine_size=engine_path.stat().st_size, onnx_file="onnx/fp32/decoder.onnx", onnx_sha256="0" * 64,
        tensorrt_version="11.4.0.106", gpu_name="NVIDIA GeForce RTX 4090", compute_capability="8.9", cuda_version="12.8",
        profiles=profiles), engine_path)
    return InplaceEngine(engine_path, ctx, contexts, [p.name for p in profiles])


def generate(assets, runner, chunk_size: int) -> torch.Tensor:
    """Logits of a 12-token prompt (in chunks) and 6 greedy decode steps, ``[1, 7, vocab]``."""
    from trt_pipeline.models.glm4v.stepper import DecoderStepper

    with runner:
        stepper = DecoderStepper(assets, runner, chunk_size=chunk_size)
        logits = [stepper.prefill_tokens(torch.arange(7, 19).view(1, -1)).logits]
        for _ in range(6):
            logits.append(stepper.decode(logits[-1][:, -1].argmax(-1)).logits)
        assert stepper.past_length == 18
    return torch.cat(logits, dim=1)


def test_the_stepper_runs_an_inplace_engine_like_onnx_runtime(inplace_engine, tiny_inplace_export) -> None:
    from trt_pipeline.models.glm4v.generation import HostAssets
    from trt_pipeline.models.glm4v.stepper import runner_kv_cache
    from trt_pipeline.runtime.onnxruntime_runner import onnx_path, ort_runner

    assets = HostAssets.from_export_dir(tiny_inplace_export)
    runner = TensorRTRunner(inplace_engine.engine_path, ctx=inplace_engine.ctx, backend=cpu_backend())
    with runner:
        assert runner_kv_cache(runner) == "inplace"
        assert list(runner.get_input_metadata()["past_key_values.0.key"].shape)[1:] == [None, 64]
    engine_logits = generate(assets, runner, chunk_size=5)
    expected = generate(assets, ort_runner(onnx_path(tiny_inplace_export, "fp32", "decoder")), chunk_size=5)
    assert float((engine_logits - expected).abs().max()) <= 1e-6
    used = [name for _, state in inplace_engine.contexts for name in state["profiles_used"]]
    assert used == ["prefill", "append", "append"] + ["decode"] * 6  # chunks 5 + 5 + 2, then one token each
