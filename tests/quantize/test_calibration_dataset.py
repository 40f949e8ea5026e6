"""The committed calibration / held-out data and its loader (trt_pipeline.quantize.dataset).

Data tests guard the properties INT8 calibration relies on: enough items, both languages, every
image decodes, the folder stays small, and nothing of the held-out split (ids, instructions,
image files or their bytes) appears in the calibration split. Error tests run on tmp_path copies.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image

from trt_pipeline.errors import CalibrationError, PipelineError
from trt_pipeline.quantize.dataset import (
    FIELDS,
    CalibrationItem,
    default_root,
    list_items,
    load_image,
    load_split,
)

ROOT = Path(__file__).resolve().parents[2] / "calibration"
MAX_BYTES = 10 * 1024 * 1024


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _norm(text: str) -> str:
    return re.sub(r"\W+", "", text.lower())


@pytest.fixture(scope="module")
def calib() -> list[CalibrationItem]:
    return list_items(ROOT, "calib")


@pytest.fixture(scope="module")
def heldout() -> list[CalibrationItem]:
    return list_items(ROOT, "heldout")


@pytest.fixture()
def split_copy(tmp_path: Path) -> Path:
    """A writable copy of the held-out split (the smaller one) named like a split folder."""
    dst = tmp_path / "heldout"
    shutil.copytree(ROOT / "heldout", dst)
    return dst


# ------------------------------------------------------------------------------ committed data

def test_default_root_is_the_committed_folder():
    assert default_root() == ROOT
    tool = ROOT.parent / "tools" / "make_calibration"
    assert (tool / "screens.yaml").is_file() and (tool / "prompts.jsonl").is_file() and (ROOT / "README.md").is_file()


def test_enough_prompts_in_both_languages(calib, heldout):
    items = calib + heldout
    assert len(items) >= 64
    for split in (calib, heldout):
        assert {i.lang for i in split} == {"zh", "en"}
    zh = sum(i.lang == "zh" for i in items)
    assert 0.4 <= zh / len(items) <= 0.6, "roughly half Chinese, half English"


def test_lang_field_matches_the_text(calib, heldout):
    for item in calib + heldout:
        has_cjk = re.search(r"[\u4e00-\u9fff]", item.instruction) is not None
        assert (item.lang == "zh") == has_cjk, item


def test_split_sizes_about_75_25(calib, heldout):
    share = len(heldout) / (len(calib) + len(heldout))
    assert 0.2 <= share <= 0.3
    assert all(i.split == "calib" for i in calib)
    assert all(i.split == "heldout" for i in heldout)


def test_most_items_have_an_image(calib, heldout):
    for split in (calib, heldout):
        assert sum(i.has_image for i in split) / len(split) >= 0.8
        assert any(not i.has_image for i in split), "a few text-only items are expected too"


def test_splits_are_disjoint(calib, heldout):
    assert not {i.id for i in calib} & {i.id for i in heldout}
    assert not {_norm(i.instruction) for i in calib} & {_norm(i.instruction) for i in heldout}
    # every file in images/, referenced or not: by name and by content
    files = {s: sorted((ROOT / s / "images").iterdir()) for s in ("calib", "heldout")}
    assert not {p.name for p in files["calib"]} & {p.name for p in files["heldout"]}
    assert not {_sha(p) for p in files["calib"]} & {_sha(p) for p in files["heldout"]}
    # and no item of one split points into the other split's folder
    for item in calib:
        assert (ROOT / "calib") in item.image_path.resolve().parents if item.image_path else True
    for item in heldout:
        assert (ROOT / "heldout") in item.image_path.resolve().parents if item.image_path else True


def test_every_image_file_is_referenced(calib, heldout):
    for name, items in (("calib", calib), ("heldout", heldout)):
        used = {i.image_path.resolve() for i in items if i.image_path}
        on_disk = {p.resolve() for p in (ROOT / name / "images").iterdir()}
        assert on_disk == used, f"unreferenced files in {name}/images: {on_disk - used}"


def test_every_referenced_image_decodes(calib, heldout):
    sizes = set()
    for item in calib + heldout:
        if item.has_image:
            img = load_image(item)
            assert img.mode == "RGB" and min(img.size) >= 200
            sizes.add(img.size)
    screens = [p for s in ("calib", "heldout") for p in (ROOT / s / "images").glob("*.png")]
    assert len(screens) >= 24
    assert any(w > h for w, h in sizes), "at least one landscape (tablet) screen"
    assert len(sizes) >= 5, "varied aspect ratios"


def test_prompts_files_have_exactly_the_documented_fields():
    for split in ("calib", "heldout"):
        for line in (ROOT / split / "prompts.jsonl").read_text(encoding="utf-8").splitlines():
            assert tuple(json.loads(line)) == FIELDS


def test_folder_is_small():
    total = sum(p.stat().st_size for p in ROOT.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    assert total <= MAX_BYTES, f"calibration/ is {total / 1e6:.1f} MB, limit 10 MB"


# ------------------------------------------------------------------------------ loader errors

def test_loads_a_copy(split_copy):
    items = load_split(split_copy)
    assert len(items) == len(load_split(ROOT / "heldout"))
    assert all(i.image_path is None or i.image_path.is_file() for i in items)


def test_missing_folder(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(CalibrationError) as e:
        load_split(missing)
    assert str(missing) in str(e.value)
    assert "prompts.jsonl" in str(e.value) and "images/" in str(e.value)
    assert e.value.exit_code == 4 and isinstance(e.value, PipelineError)


def test_missing_prompts_file(split_copy):
    (split_copy / "prompts.jsonl").unlink()
    with pytest.raises(CalibrationError, match="prompts.jsonl"):
        load_split(split_copy)


def test_unknown_split_name(tmp_path):
    with pytest.raises(CalibrationError, match="unknown calibration split"):
        list_items(ROOT, "test")


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_empty_prompts_file(split_copy, content):
    (split_copy / "prompts.jsonl").write_text(content, encoding="utf-8")
    with pytest.raises(CalibrationError, match="empty") as e:
        load_split(split_copy)
    assert "prompts.jsonl" in str(e.value)


def _rewrite_line(folder: Path, lineno: int, new: str) -> None:
    path = folder / "prompts.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[lineno - 1] = new
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_bad_json_line_names_file_and_line(split_copy):
    _rewrite_line(split_copy, 3, '{"id": "heldout-003", "split": "heldout",')
    with pytest.raises(CalibrationError) as e:
        load_split(split_copy)
    msg = str(e.value)
    assert "prompts.jsonl line 3" in msg and "not valid JSON" in msg


def test_line_that_is_not_an_object(split_copy):
    _rewrite_line(split_copy, 2, '["a", "list"]')
    with pytest.raises(CalibrationError, match="line 2"):
        load_split(split_copy)


def test_missing_fields_named_with_line(split_copy):
    _rewrite_line(split_copy, 5, json.dumps({"id": "x", "split": "heldout", "image": None}))
    with pytest.raises(CalibrationError) as e:
        load_split(split_copy)
    msg = str(e.value)
    assert "line 5" in msg and "lang" in msg and "instruction" in msg


def test_bad_lang_value(split_copy):
    _rewrite_line(split_copy, 1, json.dumps(
        {"id": "x", "split": "heldout", "lang": "fr", "instruction": "Ouvre les réglages", "image": None}))
    with pytest.raises(CalibrationError, match="line 1.*lang"):
        load_split(split_copy)


def test_heldout_item_in_calib_folder_is_refused(tmp_path):
    calib = tmp_path / "calib"
    calib.mkdir()
    (calib / "prompts.jsonl").write_text(json.dumps(
        {"id": "heldout-001", "split": "heldout", "lang": "en", "instruction": "Call Bob", "image": None}) + "\n",
        encoding="utf-8")
    with pytest.raises(CalibrationError, match="never be used for calibration"):
        load_split(calib)


def test_duplicate_id(split_copy):
    path = split_copy / "prompts.jsonl"
    first = path.read_text(encoding="utf-8").splitlines()[0]
    with path.open("a", encoding="utf-8") as f:
        f.write(first + "\n")
    with pytest.raises(CalibrationError, match="duplicate id"):
        load_split(split_copy)


def test_image_that_does_not_exist(split_copy):
    items = load_split(split_copy)
    victim = next(i for i in items if i.image_path is not None)
    victim.image_path.unlink()
    with pytest.raises(CalibrationError, match="does not exist") as e:
        load_split(split_copy)
    assert victim.image_path.name in str(e.value)


@pytest.mark.parametrize("bad", ["../calib/images/x.png", "/etc/passwd"])
def test_image_path_must_stay_inside_the_split(split_copy, bad):
    _rewrite_line(split_copy, 1, json.dumps(
        {"id": "x", "split": "heldout", "lang": "en", "instruction": "Call Bob", "image": bad}))
    with pytest.raises(CalibrationError, match="stay inside"):
        load_split(split_copy)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_undecodable_image(split_copy, damage):
    items = load_split(split_copy)
    for suffix in (".png", ".jpg"):
        item = next(i for i in items if i.image_path is not None and i.image_path.suffix == suffix)
        data = item.image_path.read_bytes()
        item.image_path.write_bytes(b"not an image at all" * 10 if damage == "garbage" else data[: len(data) // 2])
        with pytest.raises(CalibrationError, match="cannot be decoded") as e:
            load_image(item)
        assert str(item.image_path) in str(e.value)


def test_load_image_of_text_only_item():
    item = CalibrationItem(id="t", split="calib", lang="en", instruction="Call Mom", image_path=None)
    with pytest.raises(CalibrationError, match="text-only"):
        load_image(item)


def test_load_image_converts_to_rgb(tmp_path):
    path = tmp_path / "gray.png"
    Image.new("L", (8, 8), 128).save(path)
    img = load_image(CalibrationItem(id="g", split="calib", lang="en", instruction="x", image_path=path))
    assert img.mode == "RGB" and img.getpixel((0, 0)) == (128, 128, 128)


def test_items_are_frozen(calib):
    with pytest.raises(AttributeError):
        calib[0].instruction = "changed"  # type: ignore[misc]
