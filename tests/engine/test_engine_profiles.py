"""Profile derivation from export.json dims, overrides, validation against ONNX, run-time selection."""

from __future__ import annotations

import onnx
import pytest

from trt_pipeline.engine.profiles import (
    Profile,
    ShapeOverrides,
    ShapeRange,
    check_override_names,
    derive_profiles,
    eval_dim_expr,
    parse_dims,
    parse_tensor_specs,
    read_onnx_inputs,
    select_profile,
    validate_profiles,
)
from trt_pipeline.errors import ConfigError, OnnxModelError, ShapeError


@pytest.fixture
def dims(fakes):
    return parse_dims(fakes.CONTRACT_DIMS)


@pytest.fixture
def decoder_inputs(fakes):
    return parse_tensor_specs(fakes.decoder_io(layers=2)[0])


@pytest.fixture
def vision_inputs(fakes):
    return parse_tensor_specs(fakes.vision_io()[0])


def by_name(profiles):
    return {p.name: p for p in profiles}


def test_decoder_gets_prefill_and_decode_profiles_like_edge_llm(dims, decoder_inputs):
    profiles = by_name(derive_profiles("decoder", decoder_inputs, dims))
    assert list(profiles) == ["prefill", "decode", "append"]
    prefill, decode = profiles["prefill"], profiles["decode"]
    # prefill: past 0, sequence over its exported range; total = past + sequence
    assert prefill.shapes["inputs_embeds"] == ShapeRange((1, 1, 8), (1, 128, 8), (4, 512, 8))
    assert prefill.shapes["past_key_values.0.key"] == ShapeRange((1, 2, 0, 4), (1, 2, 0, 4), (4, 2, 0, 4))
    assert prefill.shapes["attention_mask"] == ShapeRange((1, 1), (1, 128), (4, 512))
    assert prefill.shapes["rope_cos"] == ShapeRange((1, 1, 4), (1, 128, 4), (4, 512, 4))
    # decode: sequence 1, past >= 1; total = past + 1
    assert decode.shapes["inputs_embeds"] == ShapeRange((1, 1, 8), (1, 1, 8), (4, 1, 8))
    assert decode.shapes["past_key_values.1.value"] == ShapeRange((1, 2, 1, 4), (1, 2, 256, 4), (4, 2, 1024, 4))
    assert decode.shapes["attention_mask"] == ShapeRange((1, 2), (1, 257), (4, 1025))
    # every dynamic input is covered by every profile
    assert set(prefill.shapes) == set(decode.shapes) == set(profiles["append"].shapes) == {s.name for s in decoder_inputs}


def test_append_profile_covers_several_tokens_on_a_filled_cache(dims, decoder_inputs):
    """Review failure 2: a chunk after the first (past >= 1, sequence >= 2) had no profile."""
    append = by_name(derive_profiles("decoder", decoder_inputs, dims))["append"]
    assert append.shapes["inputs_embeds"] == ShapeRange((1, 2, 8), (1, 128, 8), (4, 512, 8))
    assert append.shapes["past_key_values.0.key"] == ShapeRange((1, 2, 1, 4), (1, 2, 256, 4), (4, 2, 1024, 4))
    assert append.shapes["attention_mask"] == ShapeRange((1, 3), (1, 384), (4, 1536))


def test_chunked_prefill_shapes_all_find_a_profile(dims, decoder_inputs):
    """The stepper's chunked prefill of a context longer than the sequence max, then decode (bench trt decode)."""
    profiles = derive_profiles("decoder", decoder_inputs, dims)
    names = [p.name for p in profiles]
    chunk, context, past, chosen = 512, 1000, 0, []
    while past < context:
        seq = min(chunk, context - past)
        chosen.append(names[select_profile(profiles, decoder_shapes(seq=seq, past=past), component="decoder")])
        past += seq
    chosen.append(names[select_profile(profiles, decoder_shapes(seq=1, past=past), component="decoder")])
    assert chosen == ["prefill", "append", "decode"]


def test_recipe_opt_values_are_clamped_into_the_profile_range(dims, decoder_inputs, monkeypatch):
    from trt_pipeline.engine import profiles as module

    recipes = (module.ProfileRecipe("append", at_least={"past_sequence_length": 1, "sequence_length": 2},
                                    opt={"sequence_length": 1, "past_sequence_length": 700}),)
    monkeypatch.setitem(module.PROFILE_RECIPES, "decoder", recipes)
    (append,) = derive_profiles("decoder", decoder_inputs, dims)
    assert append.shapes["inputs_embeds"].opt == (1, 2, 8)  # 1 is below the append minimum of 2
    assert append.shapes["past_key_values.0.key"].opt == (1, 2, 700, 4)


def test_vision_gets_one_profile_over_the_image_token_range(dims, vision_inputs):
    (image,) = derive_profiles("vision_encoder", vision_inputs, dims)
    assert image.name == "image"
    assert image.shapes["pixel_values"] == ShapeRange((16, 12), (256, 12), (1024, 12))
    assert image.shapes["position_embeddings"] == ShapeRange((16, 8), (256, 8), (1024, 8))
    assert set(image.shapes) == {"pixel_values", "rotary_cos", "rotary_sin", "position_embeddings"}


def test_output_only_dims_with_foreign_expressions_are_not_evaluated(dims, vision_inputs):
    # export.json writes num_image_tokens = "num_patches / merge^2"; it only shapes an output.
    assert dims["num_image_tokens"].expr == "num_patches / merge^2"
    derive_profiles("vision_encoder", vision_inputs, dims)


def test_unknown_component_gets_one_default_profile(dims, vision_inputs):
    (profile,) = derive_profiles("audio_encoder", vision_inputs, dims)
    assert profile.name == "default"


def test_overrides_map_tensor_shapes_onto_symbolic_dims(dims, decoder_inputs):
    overrides = ShapeOverrides(
        min={"inputs_embeds": (1, 2, 8)},
        opt={"inputs_embeds": (2, 64, 8)},
        max={"inputs_embeds": (2, 256, 8), "past_key_values.0.key": (2, 2, 512, 4)},
    )
    profiles = by_name(derive_profiles("decoder", decoder_inputs, dims, overrides))
    assert profiles["prefill"].shapes["inputs_embeds"] == ShapeRange((1, 2, 8), (2, 64, 8), (2, 256, 8))
    # the override of one past tensor reaches every tensor sharing the dim
    assert profiles["decode"].shapes["past_key_values.1.value"].max == (2, 2, 512, 4)
    assert profiles["decode"].shapes["attention_mask"].max == (2, 513)
    # the decode recipe keeps sequence_length = 1 whatever the override says
    assert profiles["decode"].shapes["inputs_embeds"] == ShapeRange((1, 1, 8), (2, 1, 8), (2, 1, 8))


def test_override_beyond_the_exported_range_is_noted(dims, decoder_inputs):
    notes: list[str] = []
    derive_profiles("decoder", decoder_inputs, dims, ShapeOverrides(max={"inputs_embeds": (4, 1024, 8)}), notes=notes)
    assert any("sequence_length" in n and "beyond the exported" in n for n in notes)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (ShapeOverrides(max={"inputs_embeds": (4, 512, 9)}), "axis 2 is static (8)"),
        (ShapeOverrides(max={"inputs_embeds": (4, 512)}), "got 2 dims"),
        (ShapeOverrides(max={"attention_mask": (4, 2048)}), "total_sequence_length = past_sequence_length + sequence_length"),
        (ShapeOverrides(max={"inputs_embeds": (4, 512, 8), "rope_cos": (4, 300, 4)}), "sequence_length is 512 in inputs_embeds but 300 in rope_cos"),
        (ShapeOverrides(min={"inputs_embeds": (1, 600, 8)}), "need min <= opt <= max"),
    ],
)
def test_bad_overrides_are_config_errors(dims, decoder_inputs, overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("+", r"\+")):
        derive_profiles("decoder", decoder_inputs, dims, overrides)


def test_override_names_must_exist_somewhere():
    check_override_names(ShapeOverrides(max={"inputs_embeds": (1, 2, 3)}), ["inputs_embeds", "pixel_values"])
    with pytest.raises(ConfigError, match="unknown inputs: input_ids"):
        check_override_names(ShapeOverrides(max={"input_ids": (1, 2)}), ["inputs_embeds"])


def test_recipe_conflicting_with_the_exported_range_is_refused(fakes, decoder_inputs):
    data = dict(fakes.CONTRACT_DIMS, past_sequence_length={"min": 1, "opt": 8, "max": 16})
    with pytest.raises(ConfigError, match="prefill profile needs past_sequence_length = 0, but the exported range is 1..16"):
        derive_profiles("decoder", decoder_inputs, parse_dims(data))


def test_parse_dims_rejects_unordered_ranges(fakes):
    with pytest.raises(OnnxModelError, match="min <= opt <= max"):
        parse_dims({"sequence_length": {"min": 4, "opt": 2, "max": 8}})
    with pytest.raises(OnnxModelError, match="integer min/opt/max"):
        parse_dims({"sequence_length": {"min": 1}})


def test_undefined_dim_in_export_json_is_reported(fakes, decoder_inputs):
    data = {k: v for k, v in fakes.CONTRACT_DIMS.items() if k != "past_sequence_length"}
    with pytest.raises((OnnxModelError, ConfigError), match="past_sequence_length"):
        derive_profiles("decoder", decoder_inputs, parse_dims(data))


def test_dim_expressions():
    assert eval_dim_expr("past_sequence_length + sequence_length", {"past_sequence_length": 3, "sequence_length": 4}) == 7
    assert eval_dim_expr("num_patches / 4", {"num_patches": 64}) == 16
    assert eval_dim_expr("(a - 1) * 2 // 3", {"a": 7}) == 4
    with pytest.raises(ConfigError, match="non-integer"):
        eval_dim_expr("num_patches / 4", {"num_patches": 6})
    with pytest.raises(ConfigError, match="unsupported"):
        eval_dim_expr("num_patches / merge^2", {"num_patches": 16, "merge": 2})
    with pytest.raises(ConfigError, match="unknown dim"):
        eval_dim_expr("a + b", {"a": 1})
    with pytest.raises(ConfigError, match="unsupported"):
        eval_dim_expr("__import__('os')", {})


def test_validate_profiles_against_the_real_onnx_graph(tmp_path, fakes, dims, decoder_inputs):
    path = tmp_path / "decoder.onnx"
    onnx.save_model(fakes.toy_decoder_model(layers=2), str(path))
    graph_inputs = read_onnx_inputs(path)
    assert graph_inputs["inputs_embeds"] == ("batch_size", "sequence_length", 8)
    assert "W_lm" not in graph_inputs  # initializers are not inputs
    profiles = derive_profiles("decoder", decoder_inputs, dims)
    validate_profiles(profiles, graph_inputs, path=path)

    uncovered = [Profile(p.name, {k: v for k, v in p.shapes.items() if k != "rope_sin"}) for p in profiles]
    with pytest.raises(ConfigError, match="does not cover the dynamic inputs rope_sin"):
        validate_profiles(uncovered, graph_inputs, path=path)

    extra = [Profile("prefill", {**profiles[0].shapes, "input_ids": ShapeRange((1, 1), (1, 1), (1, 1))})]
    with pytest.raises(ConfigError, match="inputs the ONNX graph does not have: input_ids"):
        validate_profiles(extra, graph_inputs, path=path)

    wrong_static = dict(profiles[0].shapes)
    wrong_static["inputs_embeds"] = ShapeRange((1, 1, 16), (1, 2, 16), (1, 4, 16))
    with pytest.raises(ConfigError, match="axis 2 is static"):
        validate_profiles([Profile("prefill", wrong_static)], graph_inputs, path=path)

    wrong_rank = dict(profiles[0].shapes)
    wrong_rank["attention_mask"] = ShapeRange((1,), (2,), (3,))
    with pytest.raises(ConfigError, match="rank 1"):
        validate_profiles([Profile("prefill", wrong_rank)], graph_inputs, path=path)

    unordered = dict(profiles[0].shapes)
    unordered["attention_mask"] = ShapeRange((1, 9), (1, 2), (1, 3))
    with pytest.raises(ConfigError, match="min <= opt <= max"):
        validate_profiles([Profile("prefill", unordered)], graph_inputs, path=path)


def test_read_onnx_inputs_refuses_a_corrupt_file(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00not a protobuf")
    with pytest.raises(OnnxModelError, match="cannot read ONNX graph"):
        read_onnx_inputs(bad)


def decoder_shapes(seq: int, past: int, batch: int = 1):
    return {
        "inputs_embeds": (batch, seq, 8),
        "attention_mask": (batch, past + seq),
        "rope_cos": (batch, seq, 4),
        "rope_sin": (batch, seq, 4),
        **{f"past_key_values.{i}.{kind}": (batch, 2, past, 4) for i in range(2) for kind in ("key", "value")},
    }


def test_select_profile_by_sequence_length(dims, decoder_inputs):
    profiles = derive_profiles("decoder", decoder_inputs, dims)
    shapes = decoder_shapes
    assert select_profile(profiles, shapes(seq=7, past=0), component="decoder") == 0
    assert select_profile(profiles, shapes(seq=1, past=9), component="decoder") == 1
    assert select_profile(profiles, shapes(seq=4, past=3), component="decoder") == 2  # append
    # one-token prompt, empty cache: decode wants past >= 1, prefill fits
    assert select_profile(profiles, shapes(seq=1, past=0), component="decoder") == 0


def test_select_profile_refuses_shapes_no_profile_accepts(dims, decoder_inputs):
    profiles = derive_profiles("decoder", decoder_inputs, dims)
    with pytest.raises(ShapeError, match="no optimization profile accepts") as info:
        select_profile(profiles, decoder_shapes(seq=4, past=1100), component="decoder")
    text = str(info.value)
    assert "prefill:" in text and "decode:" in text and "append:" in text and "rebuild the engine" in text


def test_profile_json_round_trip(dims, decoder_inputs):
    profiles = derive_profiles("decoder", decoder_inputs, dims)
    assert tuple(Profile.from_json(p.to_json()) for p in profiles) == profiles
