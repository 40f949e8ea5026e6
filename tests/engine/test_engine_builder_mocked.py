"""The build against a fake ``tensorrt`` module (see tests/engine/conftest.py for what is real and what is fake)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console
from rich.progress import Progress

from trt_pipeline.artifacts import sha256_file
from trt_pipeline.engine.builder import build_engines, make_logger, make_progress_monitor, plan_build
from trt_pipeline.engine.manifest import read_manifest
from trt_pipeline.engine.options import BuildConfig
from trt_pipeline.errors import ConfigError, OnnxModelError, PipelineError


@pytest.fixture
def run_build(fakes):
    def run(out: Path, trt, *, gpu: dict | None = None, **options):
        buffer = io.StringIO()
        console = Console(file=buffer, width=250)
        ctx = fakes.fake_context(trt, **(gpu or {}))
        results = build_engines(BuildConfig(out, **options), ctx=ctx, console=console, show_progress=True)
        return results, buffer.getvalue()

    return run


def set_shape_calls(profile_mock):
    return {call.args[0]: tuple(tuple(x) for x in call.args[1:]) for call in profile_mock.set_shape.call_args_list}


def test_strongly_typed_fp16_build_on_tensorrt_11(export_dir, fake_trt, run_build, fakes):
    results, text = run_build(export_dir, fake_trt, precision="fp16", workspace=4 << 30, opt_level=5)
    state = fake_trt._state
    assert [r.component for r in results] == ["vision_encoder", "decoder"]

    # network: strongly typed (11.x: no creation flag), parsed from the fp16 variant via parse_from_file
    assert [n.flags for n in state.networks] == [0, 0]
    assert [Path(n.parsed_from) for n in state.networks] == [
        export_dir / "onnx" / "fp16" / "vision_encoder.onnx",
        export_dir / "onnx" / "fp16" / "decoder.onnx",
    ]
    # config: workspace pool, opt level, detailed profiling (engine inspector), progress monitor, timing cache
    config = state.configs[-1]
    assert config.pools == {fake_trt.MemoryPoolType.WORKSPACE: 4 << 30}
    assert config.builder_optimization_level == 5
    assert config.profiling_verbosity == fake_trt.ProfilingVerbosity.DETAILED
    assert isinstance(config.progress_monitor, fakes.lean.IProgressMonitor)
    assert config.flags_set == []
    # CreateConfig attaches an empty cache, load_timing_cache the file's: neither may ignore a mismatch
    assert config.ignore_mismatch_used == [False, False]
    assert all(ok for _, _, ok in state.progress_calls)

    # profiles: vision 1 (image), decoder 3 (prefill, decode, append) with the derived shapes
    assert len(state.configs[0].profiles) == 1 and len(config.profiles) == 3
    prefill, decode, append = (set_shape_calls(p) for p in config.profiles)
    assert append["inputs_embeds"] == ((1, 2, 8), (1, 128, 8), (4, 512, 8))
    assert prefill["inputs_embeds"] == ((1, 1, 8), (1, 128, 8), (4, 512, 8))
    assert prefill["past_key_values.0.key"] == ((1, 2, 0, 4), (1, 2, 0, 4), (4, 2, 0, 4))
    assert decode["attention_mask"] == ((1, 2), (1, 257), (4, 1025))

    # outputs: engine + manifest per component, atomically written, hashes match the files
    for result in results:
        assert result.engine_path == export_dir / "engines" / f"{result.component}.fp16.engine"
        assert result.engine_path.read_bytes().startswith(b"FAKE-ENGINE")
        manifest = read_manifest(result.engine_path)
        assert manifest == result.manifest
        assert manifest.engine_sha256 == sha256_file(result.engine_path)
        assert manifest.onnx_sha256 == sha256_file(export_dir / "onnx" / "fp16" / f"{result.component}.onnx")
        assert manifest.onnx_file == f"onnx/fp16/{result.component}.onnx"
        assert (manifest.tensorrt_version, manifest.gpu_name, manifest.compute_capability, manifest.cuda_version) == (
            "11.4.0.106", "NVIDIA GeForce RTX 4090", "8.9", "12.8")
        assert manifest.precision == "fp16" and manifest.strongly_typed and not manifest.legacy_precision_flags
        assert manifest.workspace_bytes == 4 << 30 and manifest.opt_level == 5
        assert manifest.export_sha256 == sha256_file(export_dir / "export.json")
    assert results[1].manifest.profile_names == ["prefill", "decode", "append"]
    assert results[0].manifest.profile_names == ["image"]
    assert not list((export_dir / "engines").glob(".*.tmp"))
    # reporting: versions, build time, engine size
    assert "TensorRT 11.4.0.106 (11.x)" in text and "strongly typed" in text
    assert "wrote" in text and "decoder.fp16.engine" in text and " s;" in text


def test_tensorrt_10_strongly_typed_sets_the_creation_flag(export_dir, fake_trt_factory, run_build):
    trt = fake_trt_factory("10.3.0.30")
    run_build(export_dir, trt, precision="int8")
    strongly_typed = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    assert [n.flags for n in trt._state.networks] == [strongly_typed, strongly_typed]
    assert all("onnx/int8" in n.parsed_from for n in trt._state.networks)
    assert trt._state.configs[-1].flags_set == []  # no precision flags on the strongly typed path


def test_tensorrt_10_legacy_fp16(export_dir, fake_trt_factory, run_build):
    trt = fake_trt_factory("10.3.0.30")
    results, text = run_build(export_dir, trt, precision="fp16", legacy_precision_flags=True)
    assert [n.flags for n in trt._state.networks] == [0, 0]  # weakly typed
    assert all("onnx/fp32" in n.parsed_from for n in trt._state.networks)
    assert trt._state.configs[-1].flags_set == [trt.BuilderFlag.FP16]
    manifest = results[1].manifest
    assert manifest.legacy_precision_flags and not manifest.strongly_typed
    assert manifest.builder_flags == ("FP16",) and manifest.onnx_file == "onnx/fp32/decoder.onnx"
    assert results[1].engine_path.name == "decoder.fp16.engine"
    assert "legacy builder flags" in text


def test_tensorrt_10_legacy_int8_replays_the_calibration_cache(export_dir, fake_trt_factory, run_build):
    trt = fake_trt_factory("10.3.0.30")
    results, _ = run_build(export_dir, trt, precision="int8", legacy_precision_flags=True)
    config = trt._state.configs[-1]
    assert set(config.flags_set) == {trt.BuilderFlag.FP16, trt.BuilderFlag.INT8}
    calibrator = config.int8_calibrator
    assert isinstance(calibrator, trt.IInt8EntropyCalibrator2)
    shared = (export_dir / "onnx" / "int8" / "calibration.cache").read_bytes()
    assert shared.startswith(b"TRT-1001-")  # written for another release ...
    # ... replayed with the installed release's header, the scales unchanged (review failure 7)
    assert calibrator.read_calibration_cache() == b"TRT-100300-" + shared.split(b"-", 2)[2]
    assert calibrator.get_batch(["inputs_embeds"]) is None and calibrator.get_batch_size() == 1
    # CreateConfig calibrates on the last profile (a fresh IOptimizationProfile with the same shapes)
    assert set_shape_calls(config.calibration_profile) == set_shape_calls(config.profiles[-1])
    assert config.calibration_profile not in config.profiles
    assert results[1].manifest.builder_flags == ("FP16", "INT8")


@pytest.mark.parametrize("version", ["10.3.0.30", "10.8.0.43", "10.14.1.48"])
def test_calibration_cache_header_matches_the_installed_tensorrt(export_dir, fake_trt_factory, run_build, version):
    """Review failure 7: a cache headed for 10.3 made a 10.8 build calibrate with no batches (the fake
    builder, like TensorRT, ignores a cache whose header names another release and then fails)."""
    from trt_pipeline.quantize.int8 import trt_version_number, write_calibration_cache

    write_calibration_cache(export_dir / "onnx" / "int8" / "calibration.cache", {"inputs_embeds": 0.02}, "10.3.0")
    trt = fake_trt_factory(version)
    results, _ = run_build(export_dir, trt, precision="int8", legacy_precision_flags=True)
    header = trt._state.configs[-1].int8_calibrator.read_calibration_cache().split(b"\n")[0]
    assert header == f"TRT-{trt_version_number(version)}-EntropyCalibration2".encode()
    assert results[1].manifest.builder_flags == ("FP16", "INT8")


def test_legacy_flags_on_tensorrt_11_are_refused_before_building(export_dir, fake_trt, run_build):
    with pytest.raises(ConfigError, match="not available on TensorRT 11.4.0.106"):
        run_build(export_dir, fake_trt, precision="fp16", legacy_precision_flags=True)
    assert fake_trt._state.builders == []


def test_hardware_and_version_compatibility(export_dir, fake_trt, run_build):
    results, _ = run_build(export_dir, fake_trt, precision="fp16", hardware_compat="ampere+", version_compatible=True)
    config = fake_trt._state.configs[-1]
    assert config.hardware_compatibility_level == fake_trt.HardwareCompatibilityLevel.AMPERE_PLUS
    assert config.flags_set == [fake_trt.BuilderFlag.VERSION_COMPATIBLE]
    manifest = results[0].manifest
    assert manifest.hardware_compat == "ampere+" and manifest.version_compatible
    assert manifest.builder_flags == ("VERSION_COMPATIBLE",)
    run_build(export_dir, fake_trt, precision="fp16", hardware_compat="same-cc")
    assert fake_trt._state.configs[-1].hardware_compatibility_level == fake_trt.HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY


def test_timing_cache_is_loaded_reused_and_saved(export_dir, fake_trt_factory, run_build, tmp_path):
    cache = tmp_path / "caches" / "tactics.cache"
    trt = fake_trt_factory("11.4.0.106")
    run_build(export_dir, trt, precision="fp16", timing_cache=cache)
    assert cache.read_bytes() == b"timings-from-build"
    # second build (new process): the cache file is what the builder starts from
    trt2 = fake_trt_factory("11.4.0.106")
    results, _ = run_build(export_dir, trt2, precision="fp16", timing_cache=cache)
    assert b"timings-from-build" in trt2._state.timing_blobs.values()
    assert results[0].manifest.timing_cache == str(cache)
    assert not results[0].notes


def test_timing_cache_from_another_gpu_or_corrupt_is_replaced_with_a_note(export_dir, fake_trt_factory, run_build):
    cache = export_dir / "engines" / "timing.cache"  # the default location
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"other-gpu timings")
    results, text = run_build(export_dir, fake_trt_factory("11.4.0.106"), precision="fp16")
    assert any("another GPU or TensorRT" in n for n in results[0].notes)
    assert "another GPU or TensorRT" in text
    assert cache.read_bytes() == b"timings-from-build"
    cache.write_bytes(b"corrupt!")
    results, _ = run_build(export_dir, fake_trt_factory("11.4.0.106"), precision="fp16")
    assert any("unreadable" in n for n in results[0].notes)


def test_parser_errors_name_the_nodes(export_dir, fake_trt, run_build, fakes):
    fake_trt._state.parse_errors = [
        fakes.FakeParserError(fake_trt.ErrorCode.UNSUPPORTED_NODE, "No importer registered for op: FancyAttention", 7,
                              "layers.0.self_attn/FancyAttention", "FancyAttention"),
        fakes.FakeParserError(fake_trt.ErrorCode.INVALID_NODE, "bad attribute axis", 9, "layers.0.key_cache", "Concat"),
    ]
    with pytest.raises(OnnxModelError) as info:
        run_build(export_dir, fake_trt, precision="fp16")
    text = str(info.value)
    assert "vision_encoder.onnx (2 error(s))" in text
    assert "node 'layers.0.self_attn/FancyAttention' (FancyAttention): No importer registered" in text
    assert "[UNSUPPORTED_NODE]" in text and "node 'layers.0.key_cache' (Concat)" in text
    assert not (export_dir / "engines" / "vision_encoder.fp16.engine").exists()


def test_failed_build_leaves_nothing_behind(export_dir, fake_trt, run_build):
    fake_trt._state.build_result = None
    fake_trt._state.build_log_errors = ["Requested amount of GPU memory (40 GiB) could not be allocated"]
    with pytest.raises(PipelineError, match="could not build vision_encoder.fp16.engine.*GPU memory"):
        run_build(export_dir, fake_trt, precision="fp16")
    engines = export_dir / "engines"
    assert not list(engines.glob("*.engine")) and not list(engines.glob("*.engine.json"))
    assert not list(engines.glob(".*"))


def test_external_data_is_found_next_to_the_model(make_export_dir, fake_trt, run_build):
    out = make_export_dir(external_data=True)
    results, _ = run_build(out, fake_trt, precision="fp32")
    manifest = results[1].manifest
    assert manifest.onnx_external_data == "onnx/fp32/decoder.onnx.data"
    assert manifest.onnx_external_data_sha256 == sha256_file(out / "onnx" / "fp32" / "decoder.onnx.data")


def test_shape_overrides_reach_the_profiles(export_dir, fake_trt, run_build):
    run_build(export_dir, fake_trt, precision="fp16", shapes=BuildConfig.from_options(
        export_dir, max_shapes="inputs_embeds:2x256x8,pixel_values:512x12").shapes)
    vision_config, decoder_config = fake_trt._state.configs
    assert set_shape_calls(vision_config.profiles[0])["rotary_cos"][2] == (512, 4)
    prefill, decode, append = (set_shape_calls(p) for p in decoder_config.profiles)
    assert prefill["inputs_embeds"][2] == (2, 256, 8)
    assert decode["inputs_embeds"][2] == (2, 1, 8)
    assert append["inputs_embeds"][2] == (2, 256, 8)


def test_unknown_override_name_is_refused_before_tensorrt(export_dir, fake_trt, run_build):
    with pytest.raises(ConfigError, match="unknown inputs: input_ids"):
        run_build(export_dir, fake_trt, precision="fp16", shapes=BuildConfig.from_options(export_dir, max_shapes="input_ids:1x8").shapes)
    assert fake_trt._state.builders == []


def test_profiles_are_checked_against_the_onnx_graph_before_tensorrt(export_dir, fake_trt, run_build):
    import onnx

    # a decoder whose hidden size differs from what export.json declares
    path = export_dir / "onnx" / "fp16" / "decoder.onnx"
    model = onnx.load(str(path))
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_value = 16
    onnx.save_model(model, str(path))
    with pytest.raises(ConfigError, match="inputs_embeds axis 2 is static \\(16\\)"):
        run_build(export_dir, fake_trt, precision="fp16")
    assert fake_trt._state.builders == []


def test_plan_build_needs_no_tensorrt(export_dir):
    plan = plan_build(BuildConfig(export_dir, precision="int8"))
    assert [p.component for p in plan.components] == ["vision_encoder", "decoder"]
    assert [p.name for p in plan.components[1].profiles] == ["prefill", "decode", "append"]


def test_progress_monitor_drives_a_rich_progress(fakes):
    progress = Progress(console=Console(file=io.StringIO()), disable=True)
    monitor = make_progress_monitor(fakes.lean, progress)
    assert isinstance(monitor, fakes.lean.IProgressMonitor)  # subclass of the real TensorRT interface
    monitor.phase_start("Building engine", None, 4)
    monitor.phase_start("Tactics", "Building engine", 2)
    assert [t.description for t in progress.tasks] == ["Building engine", "  Tactics"]
    assert monitor.step_complete("Tactics", 0) is True
    assert [t.completed for t in progress.tasks] == [0, 1]
    monitor.phase_finish("Tactics")
    assert [t.description for t in progress.tasks] == ["Building engine"]
    monitor.cancelled = True  # e.g. after Ctrl-C: TensorRT cancels the build when step_complete returns False
    assert monitor.step_complete("Building engine", 1) is False


def test_logger_collects_errors_for_messages(fakes):
    seen: list[str] = []
    logger = make_logger(fakes.lean, echo=seen.append)
    assert isinstance(logger, fakes.lean.ILogger)
    logger.log(fakes.lean.ILogger.Severity.ERROR, "out of memory")
    logger.log(fakes.lean.ILogger.Severity.WARNING, "slow tactic")
    logger.log(fakes.lean.ILogger.Severity.INFO, "chatter")
    assert logger.errors == ["out of memory"] and logger.warnings == ["slow tactic"]
    assert seen == ["[TensorRT error] out of memory", "[TensorRT warning] slow tactic"]


def test_strict_autospec_of_real_profile_class_checks_arguments(fakes):
    profile = fakes.strict_autospec(fakes.lean.IOptimizationProfile)
    profile.set_shape("inputs_embeds", (1, 1, 8), (1, 2, 8), (1, 4, 8))
    with pytest.raises(TypeError, match="matches no signature"):
        profile.set_shape("inputs_embeds", (1, 1, 8), (1, 4, 8))  # opt missing
    with pytest.raises(AttributeError):
        profile.set_dimensions("x", (1,))  # not a TensorRT method


def test_builder_fakes_refuse_what_tensorrt_refuses(fake_trt_factory):
    """The fakes check what TensorRT checks, so the pipeline cannot pass them with a build TensorRT rejects."""
    trt = fake_trt_factory("10.8.0.43")
    logger = make_logger(trt)
    builder = trt.Builder(logger)
    config = builder.create_builder_config()
    with pytest.raises(ValueError, match="outside 0..5"):
        config.builder_optimization_level = 99
    for size in (0, -1):
        with pytest.raises(ValueError, match="positive"):
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, size)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    network.parsed_from = "decoder.onnx"
    config.set_flag(trt.BuilderFlag.FP16)
    assert builder.build_serialized_network(network, config) is None
    assert "not allowed on a strongly typed network" in logger.errors[-1]


def test_one_tensorrt_logger_per_process(export_dir, fake_trt, run_build):
    """TensorRT keeps the first logger it is given; every Builder (and Runtime) gets the same one."""
    from trt_pipeline.engine.trt_logger import process_logger

    run_build(export_dir, fake_trt, precision="fp16")
    run_build(export_dir, fake_trt, precision="fp16")
    loggers = {id(builder.logger) for builder in fake_trt._state.builders}
    assert len(fake_trt._state.builders) == 4 and loggers == {id(process_logger(fake_trt))}


def test_build_errors_reach_the_message_of_the_build_that_failed(export_dir, fake_trt, run_build):
    fake_trt._state.build_log_errors = ["out of memory in tactic 7"]
    fake_trt._state.build_result = None
    with pytest.raises(PipelineError, match="out of memory in tactic 7"):
        run_build(export_dir, fake_trt, precision="fp16")


def test_a_profile_tensorrt_refuses_is_a_config_error(export_dir, fake_trt, run_build):
    fake_trt._state.invalid_profiles = {1}  # the decoder's decode profile (the vision encoder has one)
    with pytest.raises(ConfigError, match="TensorRT kept 2 of 3 optimization profiles: prefill"):
        run_build(export_dir, fake_trt, precision="fp16", components=("decoder",))
    assert not list((export_dir / "engines").glob("*.engine"))


def test_what_polygraphy_cannot_do_is_a_typed_build_error(export_dir, fake_trt, run_build, monkeypatch):
    """CreateConfig turns a missing TensorRT attribute into a PolygraphyException: the build reports it typed."""
    monkeypatch.delattr(fake_trt.IBuilderConfig, "builder_optimization_level")
    with pytest.raises(PipelineError, match="could not build vision_encoder.fp16.engine.*Polygraphy: "
                                            "builder_optimization_level in CreateConfig is not available"):
        run_build(export_dir, fake_trt, precision="fp16")
    assert not list((export_dir / "engines").glob("*.engine"))


def test_builds_go_through_polygraphys_loaders(export_dir, fake_trt, run_build, monkeypatch):
    """CreateConfig and EngineBytesFromNetwork are what configure and build (spied, not replaced)."""
    import polygraphy.backend.trt as polygraphy_trt

    seen = []
    for name in ("CreateConfig", "EngineBytesFromNetwork"):
        original = getattr(polygraphy_trt, name)
        monkeypatch.setattr(polygraphy_trt, name, lambda *a, _o=original, _n=name, **k: seen.append(_n) or _o(*a, **k))
    run_build(export_dir, fake_trt, precision="fp16")
    assert seen == ["CreateConfig", "EngineBytesFromNetwork"] * 2


def test_polygraphy_uses_the_contexts_tensorrt_and_logger_only_inside_the_build(fake_trt):
    """polygraphy_on points Polygraphy's lazy `tensorrt` and its TRT_LOGGER at the context, then restores them."""
    from polygraphy.backend.trt import loader, util as trt_util

    from trt_pipeline.engine.polygraphy_trt import polygraphy_on
    from trt_pipeline.engine.trt_logger import process_logger

    before = (loader.trt.__dict__.get("module"), trt_util.TRT_LOGGER)
    with polygraphy_on(fake_trt):
        assert loader.trt.Builder is fake_trt.Builder and trt_util.get_trt_logger() is process_logger(fake_trt)
    assert (loader.trt.__dict__.get("module"), trt_util.TRT_LOGGER) == before


@pytest.fixture
def fused_export(tiny_fused_export: Path, tmp_path: Path) -> Path:
    import shutil

    out = tmp_path / "fused"
    shutil.copytree(tiny_fused_export, out)
    return out


def test_a_fused_export_on_tensorrt_10_3_is_refused_with_what_to_do(fused_export, fake_trt_factory, run_build):
    """The parser of JetPack 6's TensorRT lacks opset 23's Attention/RotaryEmbedding/RMSNormalization: the error
    names the nodes, and the hint says to re-export portable (no engine is left behind)."""
    with pytest.raises(OnnxModelError) as info:
        run_build(fused_export, fake_trt_factory("10.3.0.30"), precision="fp32", components=("decoder",))
    text = str(info.value)
    assert "decoder.onnx" in text and "No importer registered for op: Attention" in text
    assert "RotaryEmbedding" in text and "RMSNormalization" in text
    assert "--decoder-ops portable" in info.value.hint and "TensorRT 10.3.0.30" in info.value.hint
    assert not list((fused_export / "engines").glob("*.engine"))


@pytest.mark.parametrize("version", ["10.15.1.29", "11.4.0.106"])
def test_a_fused_export_builds_where_the_parser_has_the_ops(fused_export, fake_trt_factory, run_build, version):
    results, _ = run_build(fused_export, fake_trt_factory(version), precision="fp32", components=("decoder",))
    assert [r.component for r in results] == ["decoder"]
    assert (fused_export / "engines" / "decoder.fp32.engine").is_file()
