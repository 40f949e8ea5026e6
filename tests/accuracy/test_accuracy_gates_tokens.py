"""The one gate table (values, flat rows, overrides) and the one token-agreement implementation."""

from __future__ import annotations

import math

import pytest

from trt_pipeline.accuracy.gates import DEFAULT_GATES, Gate, check_gate_key, with_overrides
from trt_pipeline.accuracy.tokens import TokenAgreement, first_divergence
from trt_pipeline.errors import ConfigError


def test_gate_table_rows():
    fp32 = {(g.output, g.metric): g.threshold for g in DEFAULT_GATES["fp32"].gates()}
    assert fp32 == {("image_features", "atol"): 1e-5, ("image_features", "cosine"): 0.99999,
                    ("logits", "atol"): 1e-4, ("logits", "cosine"): 0.99999,
                    ("present", "atol"): 1e-4, ("present", "cosine"): 0.99999}
    fp16 = {(g.output, g.metric): g.threshold for g in DEFAULT_GATES["fp16"].gates()}
    assert set(fp16.values()) == {0.9999, 1e-2} and len(fp16) == 6
    assert {g.metric for g in DEFAULT_GATES["int8"].gates()} == {"cosine"}
    assert [DEFAULT_GATES[p].token_exact_match for p in ("fp32", "fp16", "int8")] == [1.0, 0.9, 0.5]


def test_gate_direction_and_nan():
    assert Gate("logits", "cosine", 0.99).check(0.995) and not Gate("logits", "cosine", 0.99).check(0.98)
    assert Gate("logits", "p99_rel", 1e-2).check(5e-3) and not Gate("logits", "atol", 1e-4).check(2e-4)
    assert not Gate("logits", "cosine", 0.99).check(math.nan) and not Gate("logits", "atol", 1.0).check(None)


def test_overrides():
    gates = with_overrides("fp16", [("fp16.logits.cosine", 0.999), ("fp16.present.p99_rel", None),
                                    ("int8.tokens", 0.1), ("fp16.tokens", None)])
    assert gates.logits.cosine == 0.999 and gates.present.p99_rel is None and gates.token_exact_match == 0.0
    assert gates.image_features == DEFAULT_GATES["fp16"].image_features
    for bad in ("fp16.logits.rtol", "bf16.logits.cosine", "fp16.tokens.x"):
        with pytest.raises(ConfigError):
            check_gate_key(bad)


def test_token_agreement_arithmetic():
    assert first_divergence([1, 2, 3], [1, 2, 3]) is None
    assert first_divergence([1, 2, 3], [1, 9, 3]) == 1
    assert first_divergence([1, 2, 3], [1, 2]) == 2  # stopped early (EOS) counts as a divergence
    agreement = TokenAgreement("ort-int8", "int8", 0.5, ["a", "b", "c", "d"],
                               [[1, 2, 3], [4, 5, 6], [7, 8], [1, 1]],
                               [[1, 2, 3], [4, 0, 6], [7, 8], [2, 1]])
    assert agreement.exact_matches == 2 and agreement.exact_match_rate == 0.5 and agreement.passed
    assert agreement.mean_first_divergence == pytest.approx(0.5)
    assert agreement.mean_common_prefix == pytest.approx((3 + 1 + 2 + 0) / 4)
    strict = TokenAgreement("ort-fp32", "fp32", 1.0, agreement.ids, agreement.reference, agreement.candidate)
    assert not strict.passed and "2/4" in strict.failure() and "earliest at token 0" in strict.failure()
    assert math.isclose(strict.to_dict()["exact_match_rate"], 0.5)


def test_token_agreement_per_position_and_first_token():
    agreement = TokenAgreement("ort-fp16", "fp16", 0.0)
    agreement.add("a", [1, 2, 3, 4], [1, 2, 9, 4])  # 3 of 4 positions
    agreement.add("b", [5, 6], [5, 6, 7])  # 2 of 3 (the extra token counts as a mismatch)
    agreement.add("c", [8], [0])  # 0 of 1
    assert agreement.token_agreement == pytest.approx(5 / 8)
    assert agreement.first_token_agreement == pytest.approx(2 / 3)
    assert agreement.exact_match_rate == 0.0 and agreement.passed  # threshold 0: reported, not gated


def test_teacher_forced_agreement_arithmetic():
    agreement = TokenAgreement("ort-int8", "int8", 0.0)
    # a flip at step 1 ends the exact match, but teacher forcing scores each step on its own
    agreement.add("a", [1, 2, 3, 4], [1, 9, 9, 9], teacher_forced=[1, 9, 3, 4])  # 3 of 4
    agreement.add("b", [5, 6], [5, 6], teacher_forced=[5, 6])  # 2 of 2
    agreement.add("c", [7, 8, 9], [0], teacher_forced=[0, 8, 0])  # 1 of 3
    assert agreement.teacher_forced_agreement == pytest.approx(6 / 9)
    assert agreement.exact_match_rate == pytest.approx(1 / 3)
    rows = agreement.to_dict()["per_prompt"]
    assert [r["teacher_forced_matches"] for r in rows] == [3, 2, 1]
    assert agreement.to_dict()["teacher_forced_agreement"] == pytest.approx(6 / 9)
    with pytest.raises(ValueError, match="2 teacher-forced predictions for 3"):
        agreement.add("d", [1, 2, 3], [1, 2, 3], teacher_forced=[1, 2])
    unmeasured = TokenAgreement("ort-int8", "int8", 0.0)
    unmeasured.add("a", [1], [1])
    assert unmeasured.teacher_forced_agreement is None and unmeasured.to_dict()["per_prompt"][0]["teacher_forced"] is None


def test_teacher_forced_gate_is_checked_beside_the_exact_gate():
    # exact sequences pass their gate (1 of 2 >= 50 %), teacher-forced 4/6 = 67 % misses 90 %: the row fails
    agreement = TokenAgreement("ort-int8", "int8", 0.5, teacher_forced_threshold=0.9)
    agreement.add("a", [1, 2, 3], [1, 2, 3], teacher_forced=[1, 2, 3])
    agreement.add("b", [4, 5, 6], [4, 9, 9], teacher_forced=[4, 0, 0])
    assert agreement.exact_match_rate == 0.5 and agreement.teacher_forced_agreement == pytest.approx(4 / 6)
    assert not agreement.teacher_forced_passed and not agreement.passed
    failure = agreement.failure()
    assert "teacher-forced 66.7% (gate >= 90%)" in failure and "exact match 1/2" in failure
    assert agreement.to_dict()["teacher_forced_threshold"] == 0.9 and agreement.to_dict()["passed"] is False
    lenient = TokenAgreement("ort-int8", "int8", 0.5, agreement.ids, agreement.reference, agreement.candidate,
                             agreement.teacher_forced, teacher_forced_threshold=0.6)
    assert lenient.passed
    unmeasured = TokenAgreement("ort-int8", "int8", 0.0, teacher_forced_threshold=0.9)
    unmeasured.add("a", [1], [1])  # a gate without a measurement fails, never passes silently
    assert not unmeasured.passed and "teacher-forced not measured" in unmeasured.failure()


def test_teacher_forced_gate_defaults_and_override():
    assert [DEFAULT_GATES[p].token_teacher_forced for p in ("fp32", "fp16", "int8", "int4")] == [1.0, 0.99, 0.9, 0.9]
    gates = with_overrides("int8", [("int8.teacher_forced", 0.95), ("int8.tokens", None)])
    assert gates.token_teacher_forced == 0.95 and gates.token_exact_match == 0.0
    assert with_overrides("int8", [("int8.teacher_forced", None)]).token_teacher_forced == 0.0  # off
    check_gate_key("int4.teacher_forced")
    with pytest.raises(ConfigError, match="PRECISION.teacher_forced"):
        check_gate_key("int8.teacher_forced.x")
