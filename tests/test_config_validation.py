"""pydantic-backed stage configs: strict types from files, lax from code, one BuildOptions for every caller."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from pydantic import ValidationError

from trt_pipeline.config import BuildOptions, BuildStageConfig, CompareConfig, ExportConfig, Int8Config
from trt_pipeline.config.pipeline import load_pipeline_config, parse_pipeline_config
from trt_pipeline.errors import ConfigError


def _load(tmp_path: Path, text: str):
    path = tmp_path / "pipeline.toml"
    path.write_text(text, encoding="utf-8")
    return path, lambda: load_pipeline_config(path)


@pytest.mark.parametrize(("text", "key", "expected"), [
    ("[int8.components]\ndecoder = 3\n", "[int8] components", "dict[str, str]"),
    ("[bench]\nprompt_lengths = [16, 'x']\n", "[bench] prompt_lengths", "tuple[int, ...]"),
    ("[pipeline]\nout = 3\n", "[pipeline] out", "Path | None"),
    ("[compare]\nmax_items = 2.5\n", "[compare] max_items", "int | None"),
    ("[build]\nopt_level = '3'\n", "[build] opt_level", "int"),
    ("[export]\nmax_image_tokens = true\n", "[export] max_image_tokens", "int | None"),
])
def test_wrong_types_name_the_key_the_file_and_the_type(tmp_path, text, key, expected):
    path, load = _load(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load()
    message = info.value.render()
    assert message.startswith(key) and str(path) in message and f"expected {expected}" in message


def test_unknown_keys_in_nested_and_build_tables(tmp_path):
    path, load = _load(tmp_path, "[build]\nprecisions = ['fp16']\nworkspaces = '4GiB'\n")
    with pytest.raises(ConfigError, match=r"unknown key 'workspaces' in section \[build\]") as info:
        load()
    assert str(path) in info.value.render() and "workspace" in info.value.hint and "precisions" in info.value.hint


def test_toml_dates_are_refused_not_stringified(tmp_path):
    _, load = _load(tmp_path, "[export]\ndtype = 1979-05-27\n")
    with pytest.raises(ConfigError, match=r"\[export\] in .*date/time"):
        load()


def test_build_option_strings_are_checked_when_the_file_is_read(tmp_path):
    _, load = _load(tmp_path, "[build]\nworkspace = 'lots'\n")
    with pytest.raises(ConfigError, match=r"\[build\] in .*--workspace 'lots' is not a size"):
        load()
    _, load = _load(tmp_path, "[build]\nmax_shapes = 'inputs_embeds'\n")
    with pytest.raises(ConfigError, match=r"--max-shapes entry 'inputs_embeds' is not NAME:DIMS"):
        load()


def test_every_stage_is_a_typed_field_with_pipeline_defaults():
    cfg = parse_pipeline_config({"fp16": {"calib_samples": 3}})
    assert cfg.fp16.calib_samples == 3 and cfg.int8 == Int8Config() and isinstance(cfg.build, BuildStageConfig)
    assert cfg.compare.max_items == 6 and CompareConfig().max_items is None  # pipeline default vs command default
    assert cfg.section("bench") is cfg.bench
    with pytest.raises(ConfigError, match="unknown pipeline section 'serve'"):
        cfg.section("serve")


def test_code_gets_lax_coercion_and_dataclass_semantics():
    cfg = ExportConfig(components=["decoder"], max_seq="128")
    assert cfg.components == ("decoder",) and cfg.max_seq == 128
    assert dataclasses.replace(cfg, max_kv=64).max_kv == 64 and dataclasses.asdict(cfg)["max_seq"] == 128
    with pytest.raises(ConfigError, match="--max-kv must be >= 1, got 0"):
        dataclasses.replace(cfg, max_kv=0)  # replace re-validates
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.opset = 19  # type: ignore[misc]


def test_build_stage_config_is_build_options_plus_precisions(tmp_path):
    from trt_pipeline.engine.options import BuildConfig

    stage = BuildStageConfig(precisions=("int8",), workspace="512MiB", min_shapes="input_ids:1x1", opt_level=1)
    options = stage.options()
    assert type(options) is BuildOptions and options.workspace == "512MiB"
    assert {f.name for f in dataclasses.fields(BuildStageConfig)} - {f.name for f in dataclasses.fields(BuildOptions)} == {"precisions"}
    from_stage = BuildConfig.from_build_options(tmp_path, "int8", stage)
    from_flags = BuildConfig.from_options(tmp_path, int8=True, workspace="512MiB", min_shapes="input_ids:1x1", opt_level=1)
    assert from_stage == from_flags and from_stage.workspace == 512 << 20 and from_stage.shapes.min == {"input_ids": (1, 1)}
    with pytest.raises(ValidationError, match="timing_caches"):  # the CLI handler turns it into a ConfigError
        BuildConfig.from_options(tmp_path, timing_caches="x")
