"""TensorRT profiles, the (fake) builder and bundle for an ``--kv-cache inplace`` export.

The inplace cache inputs are ``[B, past + S, kv * D]`` on axis ``total_sequence_length``: every
profile must give them the attention mask's past + sequence range (prefill: the new rows only;
decode: past + 1; append: past + chunk), and the run-time profile choice must tell prefill from
append without a ``past_sequence_length`` axis. TensorRT itself cannot run here (no GPU): builds go
through the fake TensorRT of ``conftest.py``, which checks the API calls, not that TensorRT's
parser and kernels take the graph (its ONNX ``Attention`` with 3-D key/value and the ``ScatterElements``
cache update are unverified on a GPU).
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest
from rich.console import Console

from trt_pipeline.artifacts.manifests import read_export_manifest
from trt_pipeline.engine.builder import build_engines, plan_build
from trt_pipeline.engine.options import BuildConfig
from trt_pipeline.engine.profiles import ShapeRange, derive_profiles, select_profile
from trt_pipeline.models.glm4v.config import load_dims
from trt_pipeline.models.glm4v.io_spec import KvLayout, past_names


def decoder_profiles(export: Path):
    manifest = read_export_manifest(export)
    return {p.name: p for p in derive_profiles("decoder", manifest.components["decoder"].inputs, manifest.dims)}


def test_inplace_cache_ranges_are_past_plus_sequence_in_every_profile(tiny_inplace_export, tiny_fused_export):
    inplace, concat = decoder_profiles(tiny_inplace_export), decoder_profiles(tiny_fused_export)
    assert list(inplace) == list(concat) == ["prefill", "decode", "append"]
    ranges = read_export_manifest(tiny_inplace_export).ranges
    seq, past = ranges["sequence_length"], ranges["past_sequence_length"]
    width = KvLayout.of(load_dims(tiny_inplace_export / "hf"), "inplace").shape(1, 1)[2]
    expected_total = {"prefill": (seq.min, seq.opt, seq.max),  # nothing cached: the new rows only
                      "decode": (1 + 1, past.opt + 1, past.max + 1),
                      "append": (1 + 2, past.opt + seq.opt, past.max + seq.max)}
    for name, profile in inplace.items():
        mask = profile.shapes["attention_mask"]
        assert mask == concat[name].shapes["attention_mask"]  # the mask is the same in both layouts
        assert tuple(mask.min[1:] + mask.opt[1:] + mask.max[1:]) == expected_total[name], name
        for cache in past_names(2):
            rng = profile.shapes[cache]
            assert rng == ShapeRange((mask.min[0], mask.min[1], width), (mask.opt[0], mask.opt[1], width),
                                     (mask.max[0], mask.max[1], width)), (name, cache, rng)
        # the concat twin's cache input covers the past alone, on axis 2
        concat_cache = concat[name].shapes["past_key_values.0.key"]
        assert (concat_cache.min[2], concat_cache.max[2]) == (
            (0, 0) if name == "prefill" else (1, past.max))


def shapes_of(layout: KvLayout, batch: int, seq: int, past: int) -> dict[str, tuple[int, ...]]:
    hidden = 128
    return {"inputs_embeds": (batch, seq, hidden), "attention_mask": (batch, past + seq),
            "rope_cos": (batch, seq, 16), "rope_sin": (batch, seq, 16), "logits_positions": (1,),
            **{name: layout.shape(batch, past + seq) if layout.inplace else layout.shape(batch, past)
               for name in past_names(2)}}


@pytest.mark.parametrize("kind", ["inplace", "concat"])
def test_chunked_prefill_then_decode_pick_prefill_append_decode(tiny_inplace_export, tiny_fused_export, kind):
    export = tiny_inplace_export if kind == "inplace" else tiny_fused_export
    profiles = list(decoder_profiles(export).values())
    layout = KvLayout.of(load_dims(export / "hf"), kind)
    chosen, past = [], 0
    for seq in (40, 40, 30, 1, 1):
        chosen.append(profiles[select_profile(profiles, shapes_of(layout, 1, seq, past), component="decoder")].name)
        past += seq
    assert chosen == ["prefill", "append", "append", "decode", "decode"]


@pytest.fixture
def inplace_export(tiny_inplace_export: Path, tmp_path: Path) -> Path:
    out = tmp_path / "inplace"
    shutil.copytree(tiny_inplace_export, out)
    return out


def test_the_fake_builder_sets_the_inplace_ranges_on_tensorrt_11(inplace_export, fakes):
    trt = fakes.make_fake_tensorrt("11.4.0.106")
    results = build_engines(BuildConfig(inplace_export, precision="fp32", components=("decoder",)),
                            ctx=fakes.fake_context(trt), console=Console(file=io.StringIO()), show_progress=False)
    assert [r.component for r in results] == ["decoder"]
    assert (inplace_export / "engines" / "decoder.fp32.engine").is_file()
    planned = {p.name: p for p in plan_build(BuildConfig(inplace_export, precision="fp32", components=("decoder",)))
               .components[0].profiles}
    derived = decoder_profiles(inplace_export)  # the plan's opt values follow the export's workload
    assert {name: {t: (r.min, r.max) for t, r in p.shapes.items()} for name, p in planned.items()} == \
        {name: {t: (r.min, r.max) for t, r in p.shapes.items()} for name, p in derived.items()}
    profile_calls = [call for profile in trt._state.profiles for call in profile.set_shape.call_args_list]
    cache_calls = [tuple(tuple(x) for x in call.args[1:]) for call in profile_calls if call.args[0] == "past_key_values.0.key"]
    assert cache_calls == [(tuple(p.shapes["past_key_values.0.key"].min), tuple(p.shapes["past_key_values.0.key"].opt),
                            tuple(p.shapes["past_key_values.0.key"].max)) for p in planned.values()]


@pytest.fixture(scope="module")
def fp16_inplace_export(tiny_inplace_export: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from trt_pipeline.config import Fp16Config
    from trt_pipeline.quantize.precision import make_fp16

    out = tmp_path_factory.mktemp("bundle-inplace") / "export"
    shutil.copytree(tiny_inplace_export, out, ignore=shutil.ignore_patterns("fp16", "int8", "int4"))
    make_fp16(out, Fp16Config(calib_samples=2, evaluate=False), show_progress=False)
    return out


def test_bundle_of_an_inplace_export_writes_the_same_ranges_for_trtexec(fp16_inplace_export, tmp_path):
    from trt_pipeline.bundle.make import make_bundle
    from trt_pipeline.config.build import parse_shapes
    from trt_pipeline.errors import ConfigError

    from test_bundle import commands_of

    with pytest.raises(ConfigError, match="Attention"):  # JetPack 6's TensorRT 10.3 cannot parse the fused ops
        make_bundle(fp16_inplace_export, "jetson-orin-jp6", tmp_path / "jp6")
    assert not (tmp_path / "jp6").exists()
    made = make_bundle(fp16_inplace_export, "x86-trt11", tmp_path / "bundle")
    argv = next(a for a in commands_of(made.path) if any("decoder.onnx" in arg for arg in a))
    profiles = plan_build(BuildConfig(fp16_inplace_export, precision="fp16")).components[-1].profiles
    assert [p.name for p in profiles] == ["prefill", "decode", "append"]
    for index, profile in enumerate(profiles):
        at = argv.index(f"--profile={index}")
        for offset, kind in enumerate(("min", "opt", "max"), start=1):
            given = parse_shapes(argv[at + offset].split("=", 1)[1])
            assert given["past_key_values.1.value"] == getattr(profile.shapes["past_key_values.1.value"], kind)
            assert given["past_key_values.1.value"][:2] == given["attention_mask"]
