"""Gate semantics on synthetic outputs (no models): Polygraphy statistics -> per-precision verdicts,
config overrides."""

from __future__ import annotations


import numpy as np
import pytest

from trt_pipeline.accuracy.gates import DEFAULT_GATES, output_group
from trt_pipeline.accuracy.metrics import rms
from trt_pipeline.compare.tolerances import compare_funcs, evaluate
from trt_pipeline.config import CompareConfig
from trt_pipeline.errors import ConfigError


def _evaluate(reference: np.ndarray, candidate: np.ndarray, precision: str, name: str = "logits", cfg=None):
    from polygraphy.comparator import Comparator, RunResults
    from polygraphy.comparator.struct import IterationResult
    from polygraphy.logger import G_LOGGER

    gates = (cfg or CompareConfig()).gates(precision)
    runs = RunResults()
    runs.append(("ref", [IterationResult({name: reference}, runtime=0.0, runner_name="ref")]))
    runs.append(("cand", [IterationResult({name: candidate}, runtime=0.0, runner_name="cand")]))
    with G_LOGGER.verbosity(G_LOGGER.CRITICAL):
        accuracy = Comparator.compare_accuracy(runs, comparisons=[(1, 0)], compare_func=compare_funcs(gates, [name]))
    (stats,) = evaluate(accuracy, ("cand", "ref"), ["sample-0"], gates, backend=f"ort-{precision}",
                        precision=precision, component="decoder", scales=[{name: rms(reference)}])
    return stats


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((2, 8, 512)).astype(np.float32)


def _gate(stats, metric):
    return next(g for g in stats.gates if g.metric == metric)


def test_identical_outputs_pass_every_precision(reference):
    for precision in DEFAULT_GATES:
        stats = _evaluate(reference, reference.copy(), precision)
        assert stats.passed and stats.max_abs == 0.0 and stats.cosine == pytest.approx(1.0)


def test_scaled_output_fails_atol_but_not_cosine(reference):
    stats = _evaluate(reference, reference * 1.5, "fp32")
    assert not stats.passed
    assert not _gate(stats, "atol").passed and _gate(stats, "cosine").passed
    assert stats.max_abs == pytest.approx(0.5 * np.abs(reference).max(), rel=1e-5)
    (line,) = stats.failures()
    assert "`logits`" in line and "max abs error" in line and "sample-0" in line
    # fp16 catches the same drift through the p99 relative error (0.5 |r| at the 99th percentile).
    fp16 = _evaluate(reference, reference * 1.5, "fp16")
    assert not _gate(fp16, "p99_rel").passed and fp16.p99_rel > 0.5


def test_fp16_sized_noise_passes_fp16_fails_fp32(reference):
    noise = np.random.default_rng(1).standard_normal(reference.shape).astype(np.float32) * 1e-3
    fp16 = _evaluate(reference, reference + noise, "fp16")
    assert fp16.passed
    assert 1e-3 < fp16.p99_rel < 1e-2  # p99 of |N(0, 1e-3)| ~ 2.6e-3, relative to rms ~ 1
    assert fp16.p99_rel_elementwise > fp16.p99_rel  # element-wise |a-r|/|r| explodes near zero
    fp32 = _evaluate(reference, reference + noise, "fp32")
    assert not fp32.passed and not _gate(fp32, "atol").passed


def test_int8_cosine_gate(reference):
    rng = np.random.default_rng(2)
    small = _evaluate(reference, reference + rng.standard_normal(reference.shape).astype(np.float32) * 0.05, "int8")
    assert small.passed and small.cosine > 0.99
    large = _evaluate(reference, reference + rng.standard_normal(reference.shape).astype(np.float32) * 0.3, "int8")
    assert not large.passed and large.cosine < 0.99
    assert "cosine similarity" in large.failures()[0]


def test_nan_fails(reference):
    broken = reference.copy()
    broken[0, 0, 0] = np.nan
    for precision in DEFAULT_GATES:
        assert not _evaluate(reference, broken, precision).passed


def test_shape_mismatch_fails(reference):
    stats = _evaluate(reference, reference[:, :4], "fp32")
    assert not stats.passed and stats.shape_mismatch == ["sample-0"]


def test_overrides_change_verdicts(reference):
    cfg = CompareConfig(tolerances={"fp32.logits.atol": "off", "fp32.logits.cosine": 0.5})
    assert _evaluate(reference, reference * 1.5, "fp32", cfg=cfg).passed


def test_config_validation_and_overrides():
    cfg = CompareConfig(precisions=("fp16", "fp32", "fp16"),
                        tolerances=[("fp16.present.p99_rel", "0.05"), ("int8.tokens", 0.25), ("fp32.image_features.atol", None)])
    assert cfg.precisions == ("fp16", "fp32") and cfg.explicit_precisions
    assert cfg.gates("fp16").present.p99_rel == 0.05 and cfg.gates("fp16").logits.p99_rel == 0.01
    assert cfg.gates("int8").token_exact_match == 0.25
    assert cfg.gates("fp32").image_features.atol is None
    assert CompareConfig().requested_precisions == ("fp32", "fp16", "int8", "int4") and not CompareConfig().explicit_precisions
    for bad in ({"fp16.logits.rtol": 1}, {"bf16.logits.cosine": 1}, {"fp16.tokens.x": 1}, {"fp16.logits.cosine": "high"}):
        with pytest.raises(ConfigError):
            CompareConfig(tolerances=bad)
    with pytest.raises(ConfigError, match="unknown precision"):
        CompareConfig(precisions=("fp8",))
    with pytest.raises(ConfigError):
        CompareConfig(max_new_tokens=0)


def test_output_groups():
    assert output_group("present.11.value") == "present"
    assert output_group("logits") == "logits" and output_group("image_features") == "image_features"
