"""Property test: whatever a user writes into pipeline.toml, the reader returns a config or a ConfigError
naming the file -- never another exception (which would reach the user as a traceback)."""

from __future__ import annotations

import dataclasses
import datetime
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trt_pipeline.config.pipeline import STAGE_SECTIONS, PipelineConfig, PipelineSection, parse_pipeline_config
from trt_pipeline.errors import ConfigError

SOURCE = Path("/configs/pipeline.toml")
SECTIONS = {"pipeline": PipelineSection, **STAGE_SECTIONS}

scalars = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1), st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(), st.text(max_size=12), st.sampled_from(["fp16", "int8", "decoder", "off", "4GiB", "x:1x2", "bild"]),
    st.dates(), st.datetimes(), st.times(),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                      max_leaves=6)


@st.composite
def tables(draw) -> dict:
    """A pipeline.toml as tomllib returns it: mostly real sections and keys, some misspelled, any values."""
    data = {}
    for name in draw(st.lists(st.sampled_from([*SECTIONS, "exprot", "serve"]), unique=True, max_size=4)):
        cls = SECTIONS.get(name)
        real = [f.name for f in dataclasses.fields(cls)] if cls else ["opset"]
        key = st.integers(0, 4).flatmap(lambda i: st.text(min_size=1, max_size=10) if i == 0 else st.sampled_from(real))
        keys = draw(st.lists(key, unique=True, max_size=5))
        data[name] = {key: draw(values) for key in keys}
    if draw(st.booleans()):
        data[draw(st.sampled_from(list(SECTIONS)))] = draw(scalars)  # a key where a table belongs
    return data


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tables())
def test_any_pipeline_toml_gives_a_config_or_a_config_error_naming_the_file(data):
    try:
        cfg = parse_pipeline_config(data, SOURCE)
    except ConfigError as error:
        assert str(SOURCE) in error.render()
        assert "Traceback" not in error.render()
        return
    assert isinstance(cfg, PipelineConfig) and cfg.source == SOURCE
    for name, cls in STAGE_SECTIONS.items():
        assert isinstance(cfg.section(name), cls)


def test_the_property_test_reaches_both_outcomes():
    """Guard against a generator that only ever produces errors (or only valid files)."""
    assert isinstance(parse_pipeline_config({"bench": {"iterations": 3}}, SOURCE), PipelineConfig)
    bad_files = ({"export": {"opset": datetime.date(2020, 1, 1)}}, {"bench": {"iterations": [1]}}, {"int8": 3},
                 {"compare": {"tolerances": 3}}, {"compare": {"tolerances": "abc"}}, {"compare": {"tolerances": [1, 2]}},
                 {"compare": {"tolerances": {"fp16.tokens": True}}})
    for bad in bad_files:
        try:
            parse_pipeline_config(bad, SOURCE)
        except ConfigError as error:
            assert str(SOURCE) in error.render()
        else:
            raise AssertionError(f"{bad} was accepted")
