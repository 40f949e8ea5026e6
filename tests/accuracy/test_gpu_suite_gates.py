"""Review failure 1: the GPU suite gated element-wise p99 relative error <= 1e-2 while the same fp16
numerics give ~0.05 there, so it failed its own gate. It must use the gate table `compare` uses.

Runs on CPU: the GPU suite's gate helper is imported from tests/gpu and fed an fp16 computation.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from trt_pipeline.accuracy.gates import DEFAULT_GATES, output_group
from trt_pipeline.accuracy.metrics import tensor_metrics

GPU_SUITE = Path(__file__).resolve().parents[1] / "gpu" / "test_gpu_engines.py"


@pytest.fixture(scope="module")
def gpu_suite():
    spec = importlib.util.spec_from_file_location("gpu_suite_under_test", GPU_SUITE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fp16_pair(seed: int = 0) -> tuple[dict, dict]:
    """A layer computed in float32 and in float16 (what an fp16 engine does to it)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 7, 64)).astype(np.float32)
    w = (rng.standard_normal((64, 96)) / 8).astype(np.float32)
    reference = {"logits": x @ w, "present.0.key": np.tanh(x[..., :32])}
    candidate = {"logits": (x.astype(np.float16) @ w.astype(np.float16)).astype(np.float32),
                 "present.0.key": np.tanh(x[..., :32].astype(np.float16)).astype(np.float32)}
    return candidate, reference


def elementwise_p99(reference: np.ndarray, actual: np.ndarray) -> float:
    return float(np.quantile(np.abs(actual - reference) / np.maximum(np.abs(reference), 1e-12), 0.99))


def test_fp16_numerics_pass_the_gpu_suite_gate_exactly_when_they_pass_compare(gpu_suite):
    candidate, reference = fp16_pair()
    assert elementwise_p99(reference["logits"], candidate["logits"]) > 1e-2  # the old GPU gate failed here
    gpu_suite.assert_within_gates("fp16", candidate, reference)  # the gate table passes it ...
    for name, ref in reference.items():  # ... as `compare`'s metrics and limits do
        metrics = tensor_metrics(ref, candidate[name])
        values = {"atol": metrics.max_abs, "cosine": metrics.cosine, "p99_rel": metrics.p99_rel}
        assert all(g.check(values[g.metric]) for g in DEFAULT_GATES["fp16"].output(output_group(name)).gates(name))


def test_the_gpu_suite_gate_still_fails_a_wrong_output(gpu_suite):
    candidate, reference = fp16_pair()
    candidate["logits"] = candidate["logits"] + 0.05 * np.abs(reference["logits"]).mean()  # a dropped bias
    with pytest.raises(AssertionError, match="fp16 logits: (cosine|p99_rel)"):
        gpu_suite.assert_within_gates("fp16", candidate, reference)
