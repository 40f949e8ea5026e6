"""pipeline.toml -> PipelineConfig: sections, defaults, overrides and precise errors."""

from __future__ import annotations

from pathlib import Path

import pytest

import trt_pipeline.config as config_module
from trt_pipeline.config import BenchConfig, ExportConfig, PipelineConfig
from trt_pipeline.errors import ConfigError
from trt_pipeline.config.build import BuildStageConfig
from trt_pipeline.config.pipeline import (
    PIPELINE_DEFAULTS,
    load_pipeline_config,
    parse_pipeline_config,
)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "pipeline.toml"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pipeline.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_example_file_parses_onto_every_stage_config():
    cfg = load_pipeline_config(EXAMPLE)
    assert cfg.source == EXAMPLE and cfg.out == Path("engines/example") and cfg.checkpoint is None
    assert isinstance(cfg.export, ExportConfig) and cfg.export.max_kv == 512 and cfg.export.components == ("vision_encoder", "decoder")
    assert isinstance(cfg.bench, BenchConfig) and cfg.bench.prompt_lengths == (16, 64, 256)
    assert isinstance(cfg.build, BuildStageConfig) and cfg.build.precisions == ("fp16", "int8")
    for name, cls in (("fp16", "Fp16Config"), ("int8", "Int8Config"), ("compare", "CompareConfig")):
        if hasattr(config_module, cls):  # stage configs owned by other modules
            assert type(cfg.section(name)).__name__ == cls
    if hasattr(config_module, "Int8Config"):
        assert cfg.int8.components == {"vision_encoder": "int8", "decoder": "int8"}


def test_unknown_key_names_the_key_section_and_file(tmp_path):
    path = _write(tmp_path, "[export]\nmax_seq = 128\nmax_sequence = 64\n")
    with pytest.raises(ConfigError) as info:
        load_pipeline_config(path)
    text = info.value.render()
    assert "'max_sequence'" in text and "[export]" in text and str(path) in text
    assert "max_seq" in (info.value.hint or "")  # the valid keys are listed


def test_unknown_section_and_wrong_types_are_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown section \[exprot\]"):
        load_pipeline_config(_write(tmp_path, "[exprot]\nopset = 18\n"))
    with pytest.raises(ConfigError, match=r"\[bench\] iterations = 'ten'.*expected int"):
        load_pipeline_config(_write(tmp_path, "[bench]\niterations = 'ten'\n"))
    with pytest.raises(ConfigError, match=r"\[export\] simplify = 1.*expected bool"):
        load_pipeline_config(_write(tmp_path, "[export]\nsimplify = 1\n"))
    with pytest.raises(ConfigError, match=r"\[bench\] in .*prompt_lengths"):  # the dataclass's own validation
        load_pipeline_config(_write(tmp_path, "[bench]\nprompt_lengths = []\n"))
    with pytest.raises(ConfigError, match="unknown pipeline stage 'bild'"):
        load_pipeline_config(_write(tmp_path, "[pipeline]\nskip = ['bild']\n"))
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_pipeline_config(_write(tmp_path, "[export\n"))
    with pytest.raises(ConfigError, match="not found"):
        load_pipeline_config(tmp_path / "missing.toml")


def test_pipeline_defaults_apply_under_the_file_and_cli_overrides_win(tmp_path):
    cfg = load_pipeline_config(_write(tmp_path, "[bench]\ndecode_steps = 7\n[pipeline]\nout = 'a'\n"),
                               out=tmp_path / "b", force="int8", rehash=None)
    assert cfg.bench.decode_steps == 7  # file
    assert cfg.bench.iterations == PIPELINE_DEFAULTS["bench"]["iterations"]  # pipeline default
    assert cfg.bench.prompt_lengths == BenchConfig().prompt_lengths  # class default
    assert cfg.out == tmp_path / "b" and cfg.force == "int8" and cfg.rehash is False
    defaults = load_pipeline_config(None)
    assert defaults.out is None and defaults.resolved_out() == Path("engines/tiny")
    if hasattr(config_module, "CompareConfig"):
        assert defaults.compare.max_items == PIPELINE_DEFAULTS["compare"]["max_items"]
    with pytest.raises(ConfigError, match="unknown pipeline stage"):
        load_pipeline_config(None, force="everything")


def test_resolved_out_follows_the_checkpoint_name(tmp_path):
    assert PipelineConfig(checkpoint=tmp_path / "AutoGLM-Phone-9B").resolved_out() == Path("engines/AutoGLM-Phone-9B")


def test_build_section_maps_onto_the_engine_builder_config(tmp_path):
    section = parse_pipeline_config({"build": {"precisions": ["fp16"], "workspace": "2GiB", "opt_level": 4}}).build
    assert section.precisions == ("fp16",)
    from trt_pipeline.engine.options import BuildConfig

    build = BuildConfig.from_build_options(tmp_path, "fp16", section)
    assert build.precision == "fp16" and build.workspace == 2 * 1024**3 and build.opt_level == 4 and build.out_dir == tmp_path
    with pytest.raises(ConfigError, match="precisions"):
        parse_pipeline_config({"build": {"precisions": ["bf16"]}})
