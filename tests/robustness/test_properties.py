"""Property tests (hypothesis): whatever a user writes into config.json or export.json, every reader
answers with a result or a typed error naming the file -- never a traceback, never a write.

Each example mutates a few fields of the tiny checkpoint's ``config.json`` (or of the tiny export's
``export.json``): deleted keys, nulls, wrong types, zero/negative/huge sizes, strings, truncated
text. Then the readers run as the commands run them, and the example asserts that
  * they succeed, or raise a :class:`~trt_pipeline.errors.PipelineError` *subclass* (the untyped
    base and any other exception would reach the user as exit 1 / a traceback),
  * the message names the mutated file,
  * through the CLI: exit code 0 or a typed one (not 1), no ``Traceback`` in the output,
  * nothing in the folder was added, removed or changed (fingerprint before and after).

``derandomize=True``: the same examples every run (a failure reproduces; CI does not flake).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from robustness_workspace import fingerprint
from trt_pipeline.cli import app
from trt_pipeline.errors import PipelineError

PROPERTY_SETTINGS = settings(max_examples=200, deadline=None, derandomize=True,
                             suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

#: values a careless edit puts where a size, a flag or a name belongs
BAD_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from([0, -1, -5, 1, 3, 7, 2**31, 2**63, 10**30, -(2**63)]),
    st.integers(min_value=-(10**6), max_value=10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "128", "wide", "float32", "bfloat16", "int3", "glm4v", "llama", "-1", "1e9"]),
    st.text(max_size=8),
    st.lists(st.integers(min_value=-3, max_value=300), max_size=4),
    st.dictionaries(st.sampled_from(["rope_theta", "mrope_section", "x"]), st.integers(-3, 9), max_size=2),
)


def _key_paths(data: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every key path of a JSON object (nested objects included), e.g. ("text_config", "hidden_size")."""
    paths: list[tuple[str, ...]] = []
    if isinstance(data, dict):
        for key, value in data.items():
            paths.append((*prefix, key))
            paths += _key_paths(value, (*prefix, key))
    return paths


def _set(data: dict, path: tuple[str, ...], value: Any, delete: bool) -> None:
    node = data
    for key in path[:-1]:
        node = node.get(key) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            return  # an earlier mutation replaced a parent: nothing left to change here
    if delete:
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value


@st.composite
def mutated_json(draw: st.DrawFn, base: dict, focus: tuple[str, ...] = ()) -> str:
    """``base`` with 1-4 keys deleted or set to a bad value, sometimes truncated or not an object.

    ``focus``: top-level keys whose subtrees get half of the mutations (``dims``... in export.json).
    """
    data = json.loads(json.dumps(base))
    paths = _key_paths(base)
    focused = [p for p in paths if p[0] in focus] or paths
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        path = draw(st.sampled_from(focused if draw(st.booleans()) else paths))
        _set(data, path, draw(BAD_VALUES), delete=draw(st.integers(0, 3)) == 0)
    text = json.dumps(data, indent=2)  # NaN/Infinity: what Python writes, and what json.loads reads back
    shape = draw(st.integers(0, 19))
    if shape == 0:
        return text[: draw(st.integers(min_value=0, max_value=len(text) - 1))]
    if shape == 1:
        return json.dumps(draw(st.sampled_from([[], [data], "config", 3, None])))
    return text


def _assert_typed(error: BaseException, file: Path) -> None:
    assert isinstance(error, PipelineError) and type(error) is not PipelineError, f"untyped: {error!r}"
    rendered = error.render()
    assert str(file) in rendered, f"the message does not name {file}: {rendered}"
    assert "Traceback" not in rendered


def _assert_cli_ok_or_typed(argv: list[str], file_or_folder: Path) -> int:
    result = CliRunner().invoke(app, argv)
    assert "Traceback" not in result.output, result.output
    assert result.exit_code != 1, f"exit 1 (unexpected exception): {result.output}\n{result.exception!r}"
    if result.exit_code != 0:
        assert str(file_or_folder) in result.output, f"the message does not name {file_or_folder}: {result.output}"
    return result.exit_code


# ----------------------------------------------------------------------------------- config.json


@pytest.fixture(scope="module")
def checkpoint_copy(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One private copy of the tiny checkpoint; each example rewrites only its config.json."""
    return Path(shutil.copytree(tiny_checkpoint, tmp_path_factory.mktemp("props") / "ck"))


def _export_entry_checks(checkpoint: Path, dims: Any) -> None:
    """What ``export`` checks after the dims and before it writes anything: serving assets, dtype, ranges."""
    from trt_pipeline.config import ExportConfig
    from trt_pipeline.export.dims import export_dims
    from trt_pipeline.export.dtypes import resolve_export_dtype
    from trt_pipeline.models.glm4v.assets import check_serving_assets

    cfg = ExportConfig()
    check_serving_assets(checkpoint, allow_missing=cfg.allow_missing_tokenizer)
    resolve_export_dtype(cfg.dtype, checkpoint)
    export_dims(cfg, dims, checkpoint)


@pytest.fixture(scope="module")
def tiny_config(tiny_checkpoint: Path) -> dict:
    return json.loads((tiny_checkpoint / "config.json").read_text(encoding="utf-8"))


def test_any_config_json_gives_dims_or_a_checkpoint_error_naming_it(checkpoint_copy: Path, tiny_config: dict):
    from trt_pipeline.models.glm4v.config import load_dims

    config_path = checkpoint_copy / "config.json"
    outcomes = {"dims": 0, "dims_refused": 0, "export_checks_ok": 0, "export_checks_refused": 0, "info_ok": 0}

    @PROPERTY_SETTINGS
    @given(text=mutated_json(tiny_config))
    def check(text: str) -> None:
        config_path.write_text(text, encoding="utf-8")
        before = fingerprint(checkpoint_copy)
        try:
            dims = load_dims(checkpoint_copy)
            outcomes["dims"] += 1
        except Exception as error:  # noqa: BLE001 - the property: only typed errors
            _assert_typed(error, config_path)
            outcomes["dims_refused"] += 1
        else:
            try:
                _export_entry_checks(checkpoint_copy, dims)
                outcomes["export_checks_ok"] += 1
            except Exception as error:  # noqa: BLE001
                _assert_typed(error, checkpoint_copy)  # config.json or preprocessor_config.json
                outcomes["export_checks_refused"] += 1
        if _assert_cli_ok_or_typed(["info", str(checkpoint_copy)], checkpoint_copy) == 0:
            outcomes["info_ok"] += 1
        assert fingerprint(checkpoint_copy) == before, "a reader wrote into the checkpoint folder"

    check()
    print(f"config.json examples: {outcomes}")
    assert outcomes["dims"] > 0 and outcomes["dims_refused"] > 0, f"the generator reaches only one outcome: {outcomes}"


# ----------------------------------------------------------------------------------- export.json


@pytest.fixture(scope="module")
def export_copy(compare_export: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One private copy of the tiny export; each example rewrites only its export.json."""
    return Path(shutil.copytree(compare_export, tmp_path_factory.mktemp("props") / "export"))


@pytest.fixture(scope="module")
def tiny_manifest(compare_export: Path) -> dict:
    return json.loads((compare_export / "export.json").read_text(encoding="utf-8"))


def _read_like_the_commands(out: Path) -> None:
    """export.json read as generate, compare and build read it, up to (not including) running a model."""
    from trt_pipeline.artifacts import read_export_manifest
    from trt_pipeline.engine.builder import plan_build
    from trt_pipeline.engine.options import BuildConfig
    from trt_pipeline.generate import export_chunk_size
    from trt_pipeline.models.glm4v.generation import HostAssets

    manifest = read_export_manifest(out)
    manifest.ranges, manifest.precision, manifest.dtype, manifest.checkpoint_path  # compare, validate
    export_chunk_size(out)  # generate
    HostAssets.from_export_dir(out)  # generate / compare: host tables verified against export.json
    plan_build(BuildConfig(out))  # build, everything before TensorRT


def test_any_export_json_is_read_or_refused_naming_it(export_copy: Path, tiny_manifest: dict):
    manifest_path = export_copy / "export.json"
    outcomes = {"read": 0, "refused": 0, "build_cli_refused": 0}

    @PROPERTY_SETTINGS
    @given(text=mutated_json(tiny_manifest, focus=("dims", "files", "components")))
    def check(text: str) -> None:
        manifest_path.write_text(text, encoding="utf-8")
        before = fingerprint(export_copy)
        try:
            _read_like_the_commands(export_copy)
            outcomes["read"] += 1
        except Exception as error:  # noqa: BLE001 - the property: only typed errors
            _assert_typed(error, export_copy)  # export.json, or a file it names that no longer matches
            outcomes["refused"] += 1
        # `build --print-trtexec` plans the build (export.json, profiles) without TensorRT
        if _assert_cli_ok_or_typed(["build", str(export_copy), "--print-trtexec", "--trtexec-tensorrt", "10"],
                                   export_copy) != 0:
            outcomes["build_cli_refused"] += 1
        assert fingerprint(export_copy) == before, "a reader wrote into the export folder"

    check()
    print(f"export.json examples: {outcomes}")
    assert outcomes["read"] > 0 and outcomes["refused"] > 0, f"the generator reaches only one outcome: {outcomes}"
