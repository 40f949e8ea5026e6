"""A broken checkpoint gets the same clear error from `info` and `export` (issue 17).

Wrong value types or non-positive sizes in config.json, pickle-only weights and a missing
tokenizer / chat template / image processor config: each case asserts the exit code, that the
message names the file and the key, that there is no traceback and no (partial) output.
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trt_pipeline.cli import app
from trt_pipeline.errors import CheckpointError
from trt_pipeline.models.info import checkpoint_info

runner = CliRunner()


def _copy(src: Path, dst: Path, weights: bool = False) -> Path:
    ignore = None if weights else shutil.ignore_patterns("*.safetensors")
    shutil.copytree(src, dst, ignore=ignore)
    return dst


def _edit_config(folder: Path, section: str | None, key: str, value: object) -> None:
    path = folder / "config.json"
    config = json.loads(path.read_text())
    (config[section] if section else config)[key] = value
    path.write_text(json.dumps(config))


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _export(checkpoint: Path, out: Path, *extra: str):
    return runner.invoke(app, ["export", str(checkpoint), "--out", str(out), "--no-validate", *extra])


def _no_output(parent: Path, name: str) -> bool:
    return not [p for p in parent.iterdir() if name in p.name]


BAD_VALUES = [
    ("text_config", "hidden_size", "abc", "text_config.hidden_size"),
    ("text_config", "num_hidden_layers", 2.5, "text_config.num_hidden_layers"),
    ("text_config", "vocab_size", -5, "text_config.vocab_size"),
    ("text_config", "intermediate_size", 0, "text_config.intermediate_size"),
    ("text_config", "num_attention_heads", None, "text_config.num_attention_heads"),
    ("vision_config", "depth", 0, "vision_config.depth"),
    ("vision_config", "patch_size", -14, "vision_config.patch_size"),
    ("vision_config", "hidden_size", "64", "vision_config.hidden_size"),
    ("text_config", "rms_norm_eps", "tiny", "text_config.rms_norm_eps"),
    (None, "image_token_id", "x", "image_token_id"),
]


@pytest.mark.parametrize(("section", "key", "value", "named"), BAD_VALUES, ids=[c[3] + "=" + repr(c[2]) for c in BAD_VALUES])
def test_bad_config_values_are_refused_by_info_and_export(tiny_checkpoint, tmp_path, section, key, value, named):
    ck = _copy(tiny_checkpoint, tmp_path / "ck", weights=True)
    _edit_config(ck, section, key, value)
    before = _tree(ck)
    config_path = str(ck / "config.json")

    with pytest.raises(CheckpointError) as raised:
        checkpoint_info(ck)
    assert f"`{named}`" in raised.value.message and config_path in raised.value.message

    for args in (["info", str(ck)], ["info", str(ck), "--json"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert named in result.output and config_path in result.output
        assert "Traceback" not in result.output
    result = _export(ck, tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert named in result.output and config_path in result.output and "Traceback" not in result.output
    assert _no_output(tmp_path, "out")
    assert _tree(ck) == before  # nothing touched in the checkpoint


def test_info_never_reports_negative_counts(tiny_checkpoint, tmp_path):
    """The arithmetic only ever sees positive sizes: the schema check runs before it."""
    for key in ("vocab_size", "hidden_size", "num_hidden_layers"):
        ck = _copy(tiny_checkpoint, tmp_path / key)
        _edit_config(ck, "text_config", key, -3)
        result = runner.invoke(app, ["info", str(ck), "--json"])
        assert result.exit_code == 2 and "must be a positive integer, got -3" in result.output
        assert '"parameters"' not in result.output


def test_missing_size_key_has_no_silent_default(tiny_checkpoint, tmp_path):
    """info used to fill a missing hidden_size with the 9B value; now info and export both refuse it."""
    ck = _copy(tiny_checkpoint, tmp_path / "ck")
    config = json.loads((ck / "config.json").read_text())
    del config["text_config"]["hidden_size"]
    (ck / "config.json").write_text(json.dumps(config))
    for result in (runner.invoke(app, ["info", str(ck)]), _export(ck, tmp_path / "out")):
        assert result.exit_code == 2
        assert "`text_config.hidden_size` is missing" in result.output and str(ck / "config.json") in result.output
    assert _no_output(tmp_path, "out")


class _Detonator:
    """Unpickling this object creates a marker file: proof that a pickle was (not) loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_only_checkpoint_is_refused_without_unpickling(tiny_checkpoint, tmp_path):
    ck = _copy(tiny_checkpoint, tmp_path / "ck")  # config, tokenizer, processor; no safetensors
    marker = tmp_path / "unpickled"
    (ck / "pytorch_model.bin").write_bytes(pickle.dumps(_Detonator(marker)))
    before = _tree(ck)

    with pytest.raises(CheckpointError, match="pickle"):
        checkpoint_info(ck)
    for result in (runner.invoke(app, ["info", str(ck)]), _export(ck, tmp_path / "out")):
        assert result.exit_code == 2, result.output
        output = " ".join(result.output.split())
        assert "pytorch_model.bin" in output and str(ck) in output
        assert "save_pretrained" in output and "safetensors" in output  # the conversion command
        assert "Traceback" not in result.output
    assert not marker.exists(), "the pickle was loaded"
    assert _no_output(tmp_path, "out") and _tree(ck) == before


@pytest.mark.parametrize(
    ("removed", "named"),
    [
        (("tokenizer.json",), "tokenizer.json"),
        (("chat_template.jinja",), "chat_template.jinja"),
        (("preprocessor_config.json",), "preprocessor_config.json"),
    ],
)
def test_export_refuses_a_checkpoint_that_cannot_be_served(tiny_checkpoint, tmp_path, removed, named):
    ck = _copy(tiny_checkpoint, tmp_path / "ck", weights=True)
    for name in removed:
        (ck / name).unlink()
    result = _export(ck, tmp_path / "out")
    assert result.exit_code == 2, result.output
    output = " ".join(result.output.split())
    assert str(ck / named) in output and "--allow-missing-tokenizer" in output and "Traceback" not in output
    assert _no_output(tmp_path, "out")


def test_allow_missing_tokenizer_records_a_warning(tiny_checkpoint, tmp_path):
    ck = _copy(tiny_checkpoint, tmp_path / "ck", weights=True)
    (ck / "tokenizer.json").unlink()
    (ck / "chat_template.jinja").unlink()
    out = tmp_path / "out"
    result = _export(ck, out, "--allow-missing-tokenizer", "--max-seq", "128", "--max-kv", "128")
    assert result.exit_code == 0, result.output
    warnings = json.loads((out / "export.json").read_text())["warnings"]
    assert len(warnings) == 2
    assert str(ck / "tokenizer.json") in warnings[0] and str(ck / "chat_template.jinja") in warnings[1]


def test_complete_checkpoint_exports_without_warnings(compare_export):
    assert json.loads((compare_export / "export.json").read_text())["warnings"] == []
