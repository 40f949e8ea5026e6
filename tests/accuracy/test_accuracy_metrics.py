"""The one definition of each accuracy metric: numbers on synthetic tensors, and the array path equals
what `compare` derives from Polygraphy's statistics (so validate, precision, compare and the GPU tests
measure the same thing)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trt_pipeline.accuracy.metrics import cosine, max_abs, p99_rel, relative_to_rms, rms, tensor_metrics


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((2, 8, 512)).astype(np.float32)


def test_definitions_on_known_tensors():
    ref = np.array([3.0, -4.0, 0.0, 0.0], np.float32)
    assert rms(ref) == pytest.approx(2.5)
    assert max_abs(ref, ref + np.array([0, 0.5, 0, -1])) == pytest.approx(1.0)
    assert cosine(ref, 2 * ref) == pytest.approx(1.0) and cosine(ref, -ref) == pytest.approx(-1.0)
    assert cosine(np.zeros(3), np.zeros(3)) == 1.0 and cosine(np.zeros(3), np.ones(3)) == 0.0
    # |d| = [0, 0, 0, 1] -> 99th percentile (linear) = 0.97; RMS = 2.5
    assert p99_rel(ref, ref + np.array([0, 0, 0, 1])) == pytest.approx(0.97 / 2.5)
    assert relative_to_rms(0.0, 0.0) == 0.0 and relative_to_rms(1.0, 0.0) == math.inf


def test_p99_rel_is_bounded_where_the_reference_is_near_zero(reference):
    """The reason for the formula: elementwise |d|/|r| explodes on near-zero elements, p99|d|/RMS does not."""
    noise = np.random.default_rng(1).standard_normal(reference.shape) * 1e-3
    value = p99_rel(reference, reference + noise)
    assert 2e-3 < value < 3e-3  # p99 of |N(0, 1e-3)| = 2.58e-3, RMS(reference) ~ 1
    elementwise = np.quantile(np.abs(noise) / (np.abs(reference) + 1e-6), 0.99)
    assert elementwise > 10 * value
    assert p99_rel(1e3 * reference, 1e3 * (reference + noise)) == pytest.approx(value, rel=1e-5)  # scale-free


def test_non_finite_candidates_fail_every_metric(reference):
    broken = reference.copy()
    broken[0, 0, 0] = np.nan
    metrics = tensor_metrics(reference, broken)
    assert metrics.max_abs == math.inf and metrics.p99_rel == math.inf and math.isnan(metrics.cosine)
    with pytest.raises(ValueError, match="shapes differ"):
        tensor_metrics(reference, reference[:, :4])


@pytest.mark.parametrize("scale", [1e-3, 5e-2])
def test_array_metrics_equal_compare_polygraphy_statistics(reference, scale):
    """compare (Polygraphy SimpleCompareFunc + CosineSimilarityCompareFunc) and the array path agree."""
    from polygraphy.comparator import Comparator, RunResults
    from polygraphy.comparator.struct import IterationResult
    from polygraphy.logger import G_LOGGER

    from trt_pipeline.accuracy.gates import DEFAULT_GATES
    from trt_pipeline.compare.tolerances import compare_funcs, evaluate

    candidate = reference + (np.random.default_rng(2).standard_normal(reference.shape) * scale).astype(np.float32)
    runs = RunResults()
    runs.append(("ref", [IterationResult({"logits": reference}, runtime=0.0, runner_name="ref")]))
    runs.append(("cand", [IterationResult({"logits": candidate}, runtime=0.0, runner_name="cand")]))
    gates = DEFAULT_GATES["fp16"]
    with G_LOGGER.verbosity(G_LOGGER.CRITICAL):
        accuracy = Comparator.compare_accuracy(runs, comparisons=[(1, 0)], compare_func=compare_funcs(gates, ["logits"]))
    (stats,) = evaluate(accuracy, ("cand", "ref"), ["s0"], gates, backend="b", precision="fp16", component="decoder",
                        scales=[{"logits": rms(reference)}])
    metrics = tensor_metrics(reference, candidate)
    assert stats.max_abs == pytest.approx(metrics.max_abs, rel=1e-5)
    assert stats.p99_rel == pytest.approx(metrics.p99_rel, rel=1e-4)
    assert stats.cosine == pytest.approx(metrics.cosine, abs=1e-6)  # Polygraphy sums in float32
    assert stats.passed == (metrics.cosine >= 0.9999 and metrics.p99_rel <= 1e-2)
