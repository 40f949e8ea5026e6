"""ONNX Runtime sessions from one place (``OrtSettings``) and the IO-bound runner's buffer reuse.

The IO-bound runner writes outputs into pooled buffers; these tests check that it gives the same
numbers as ``InferenceSession.run``, that it really reuses buffers on a decode loop, and that a
cache someone still holds (a saved stepper state) is never overwritten by later steps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from trt_pipeline.errors import ConfigError
from trt_pipeline.models.glm4v.generation import HostAssets
from trt_pipeline.models.glm4v.stepper import DecoderStepper
from trt_pipeline.runtime.onnxruntime_runner import OrtSettings, onnx_path, ort_runner, session
from trt_pipeline.runtime.ort_binding import BoundOrtRunner, BufferPool


@pytest.mark.parametrize("kwargs", [{"intra_op_threads": 0}, {"inter_op_threads": -1},
                                    {"execution_mode": "eager"}, {"optimization": "max"}])
def test_settings_refuse_bad_values(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        OrtSettings(**kwargs)


def test_session_gets_the_settings(tiny_export: Path) -> None:
    import onnxruntime as ort

    settings = OrtSettings(intra_op_threads=1, inter_op_threads=2, execution_mode="parallel", optimization="basic")
    options = settings.session_options()
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (1, 2)
    assert options.execution_mode == ort.ExecutionMode.ORT_PARALLEL
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    sess = session(onnx_path(tiny_export, "fp32", "decoder"), settings=settings)
    assert sess.get_session_options().intra_op_num_threads == 1


def test_pool_never_hands_out_a_referenced_buffer() -> None:
    pool = BufferPool()
    first = pool.take("present", (1, 2, 5, 4), np.float32)
    second = pool.take("present", (1, 2, 5, 4), np.float32)
    assert not np.shares_memory(first, second) and len(pool) == 2
    view = first[:, :, :3]  # a view keeps its buffer busy too
    del first
    third = pool.take("present", (1, 2, 6, 4), np.float32)  # fits the headroom of either buffer
    assert not np.shares_memory(third, view) and not np.shares_memory(third, second)
    del view, second
    fourth = pool.take("present", (1, 2, 6, 4), np.float32)
    assert len(pool) == 3 and fourth.flags.c_contiguous and not np.shares_memory(fourth, third)


def _run(tiny_export: Path, io_binding: bool) -> tuple[list[torch.Tensor], torch.Tensor, dict, int]:
    runner = ort_runner(onnx_path(tiny_export, "fp32", "decoder"),
                        settings=OrtSettings(intra_op_threads=1, io_binding=io_binding))
    assert isinstance(runner, BoundOrtRunner) == io_binding
    with runner:
        stepper = DecoderStepper(HostAssets.from_export_dir(tiny_export), runner)
        ids = torch.randint(0, 200, (1, 12), generator=torch.Generator().manual_seed(0))
        logits = [stepper.prefill_tokens(ids).logits]
        saved = stepper.save()
        snapshot = {name: value.copy() for name, value in saved.past.items()}
        token = torch.tensor([5])
        for _ in range(8):
            out = stepper.decode(token)
            logits.append(out.logits)
            token = out.last_logits.argmax(-1)
        unchanged = all(np.array_equal(saved.past[name], value) for name, value in snapshot.items())
        stepper.load(saved)
        again = stepper.decode(torch.tensor([5])).logits
        buffers = len(runner.pool) if io_binding else 0
    return logits, again, {"saved_state_unchanged": unchanged}, buffers


def test_io_binding_matches_plain_run_and_reuses_buffers(tiny_export: Path) -> None:
    plain, plain_again, _, _ = _run(tiny_export, io_binding=False)
    bound, bound_again, facts, buffers = _run(tiny_export, io_binding=True)
    for a, b in zip(plain, bound):
        assert torch.equal(a, b)
    assert torch.equal(plain_again, bound_again)
    assert facts["saved_state_unchanged"]  # later steps did not write into the saved cache
    outputs = 1 + 2 * HostAssets.from_export_dir(tiny_export).dims.text.num_hidden_layers
    # 9 steps (prefill + 8 decodes): a fresh buffer per output and step would be 9 per output
    assert buffers <= 4 * outputs


def test_bound_outputs_share_one_slab_per_step_and_slabs_are_reused(tiny_export: Path) -> None:
    """Every output of a decode step is carved from one pooled slab; a decode loop that keeps only
    its current cache cycles through two slabs (plus the prefill's), however many steps it runs."""
    runner = ort_runner(onnx_path(tiny_export, "fp32", "decoder"), settings=OrtSettings(intra_op_threads=1))
    with runner:
        stepper = DecoderStepper(HostAssets.from_export_dir(tiny_export), runner, check_inputs=False)
        stepper.prefill_tokens(torch.randint(0, 200, (1, 12), generator=torch.Generator().manual_seed(0)))
        token = torch.tensor([5])
        for _ in range(20):
            out = stepper.decode(token)
            token = out.last_logits.argmax(-1)
        bases = {value.base.ctypes.data for value in out.outputs.values()}
        assert len(bases) == 1  # one slab
        assert all(value.flags.c_contiguous for value in out.outputs.values())
        assert len(runner.pool) <= 3


def test_bound_runner_takes_torch_and_non_contiguous_feeds(tiny_export: Path) -> None:
    """The lean path is for numpy feeds; torch feeds (torch out) and strided arrays give the plain run's numbers."""
    path = onnx_path(tiny_export, "fp32", "decoder")
    assets = HostAssets.from_export_dir(tiny_export)
    with ort_runner(path, settings=OrtSettings(intra_op_threads=1)) as runner:
        stepper = DecoderStepper(assets, runner)
        feed = stepper.prepare(stepper.builder.token_embeddings(torch.tensor([[3, 4, 5]])),
                               torch.ones(1, 3, dtype=torch.long), torch.arange(3).view(1, 1, 3).expand(3, 1, 3))
        expected = session(path, settings=OrtSettings(intra_op_threads=1)).run(None, dict(feed))
        strided = dict(feed)
        wide = np.zeros((*feed["inputs_embeds"].shape[:-1], 2 * feed["inputs_embeds"].shape[-1]), np.float32)
        wide[..., ::2] = feed["inputs_embeds"]
        strided["inputs_embeds"] = wide[..., ::2]
        assert not strided["inputs_embeds"].flags.c_contiguous
        as_torch = runner.infer({name: torch.from_numpy(value) for name, value in feed.items()})
        for outputs in (runner.infer(strided), as_torch, runner.infer(feed)):
            for value, reference in zip(outputs.values(), expected):
                assert np.array_equal(np.asarray(value), reference)
        assert all(isinstance(value, torch.Tensor) for value in as_torch.values())
