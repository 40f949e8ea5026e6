"""`autoglm-trt calib-import`: real screenshots + instructions -> a calibration root `--calib` reads.

Good cases check what precision int8 relies on: both splits load with the dataset reader, every
screenshot is copied byte for byte, a screenshot (or an identical copy of it) is never in both
splits, and the split is deterministic. Bad cases check each input problem is a CalibrationError
naming the file, and that nothing is written or changed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from trt_pipeline.cli import app
from trt_pipeline.errors import CalibrationError
from trt_pipeline.quantize.calib_import import MANIFEST, import_screenshots
from trt_pipeline.quantize.dataset import list_items, load_image


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree(root: Path) -> dict[str, str]:
    """Every file under root with its sha256 (the folder's state, to prove it was not touched)."""
    return {p.relative_to(root).as_posix(): _sha(p) for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture()
def shots(tmp_path: Path) -> Path:
    """Eight distinct small screenshots (PNG and JPEG) plus a non-image file that must be ignored."""
    folder = tmp_path / "shots"
    folder.mkdir()
    for i in range(8):
        img = Image.new("RGB", (90 + i, 195), (30 * i, 120, 255 - 20 * i))
        img.save(folder / (f"s{i}.png" if i % 2 else f"s{i}.jpg"))
    (folder / "notes.md").write_text("not an image", encoding="utf-8")
    return folder


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture()
def prompts(tmp_path: Path, shots: Path) -> Path:
    rows = []
    for p in sorted(q for q in shots.iterdir() if q.suffix != ".md"):
        rows += [{"image": p.name, "instruction": f"Open the app on {p.stem}"},
                 {"image": p.name, "instruction": f"打开{p.stem}的设置", "lang": "zh"}]
    rows += [{"image": None, "instruction": "Call Mom"}, {"instruction": "把手机调成静音"}]
    return _jsonl(tmp_path / "prompts.jsonl", rows)


# ----------------------------------------------------------------------------------- good cases

def test_jsonl_import_writes_a_calibration_root_split_by_image(tmp_path, shots, prompts):
    out = tmp_path / "calibration"
    result = import_screenshots(shots, prompts, out)
    calib, held = list_items(out, "calib"), list_items(out, "heldout")
    assert result.prompts == {"calib": len(calib), "heldout": len(held)}
    assert len(calib) + len(held) == 18
    assert result.images == {"calib": 6, "heldout": 2}  # ceil(0.25 * 8) screenshots held out
    calib_imgs = {i.image_path.name for i in calib if i.has_image}
    held_imgs = {i.image_path.name for i in held if i.has_image}
    assert calib_imgs and held_imgs and not calib_imgs & held_imgs
    for item in calib + held:
        if item.has_image:
            assert _sha(item.image_path) == _sha(shots / item.image_path.name)  # copied unchanged
            assert load_image(item).size[1] == 195
    assert {i.lang for i in calib + held} == {"zh", "en"}
    manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    assert manifest["images_per_split"] == {"calib": 6, "heldout": 2}


def test_the_split_is_deterministic_and_follows_the_seed(tmp_path, shots, prompts):
    a, b, c = (import_screenshots(shots, prompts, tmp_path / n, seed=s) for n, s in (("a", 0), ("b", 0), ("c", 7)))
    assert _tree(a.root / "calib") == _tree(b.root / "calib")
    held = [{i.image_path.name for i in list_items(r.root, "heldout") if i.has_image} for r in (a, c)]
    assert held[0] != held[1]


def test_txt_prompts_pair_with_screenshots_in_name_order(tmp_path, shots):
    lines = [f"instruction {i}" for i in range(8)]
    txt = tmp_path / "prompts.txt"
    txt.write_text("\n".join(lines) + "\n\n", encoding="utf-8")
    out = import_screenshots(shots, txt, tmp_path / "out", heldout_share=0).root
    items = list_items(out, "calib")
    assert [(i.instruction, i.image_path.name) for i in items] == [
        (f"instruction {i}", f"s{i}.{'png' if i % 2 else 'jpg'}") for i in range(8)]
    assert not (out / "heldout").exists()


def test_identical_screenshots_under_two_names_stay_in_one_split(tmp_path, shots):
    for i in range(8):
        (shots / f"copy{i}.png").write_bytes((shots / f"s{i}.{'png' if i % 2 else 'jpg'}").read_bytes())
    names = sorted(p.name for p in shots.iterdir() if p.suffix != ".md")
    rows = _jsonl(tmp_path / "p.jsonl", [{"image": n, "instruction": f"tap {n}"} for n in names])
    out = import_screenshots(shots, rows, tmp_path / "out", heldout_share=0.5).root
    digests = {s: {_sha(i.image_path) for i in list_items(out, s)} for s in ("calib", "heldout")}
    assert digests["calib"] and digests["heldout"] and not digests["calib"] & digests["heldout"]


def test_overwrite_replaces_only_our_splits_and_keeps_the_readme(tmp_path, shots, prompts):
    out = tmp_path / "calibration"
    import_screenshots(shots, prompts, out)
    (out / "README.md").write_text("ours", encoding="utf-8")
    txt = tmp_path / "p.txt"
    txt.write_text("\n".join(f"new {i}" for i in range(8)), encoding="utf-8")
    import_screenshots(shots, txt, out, heldout_share=0, overwrite=True)
    assert (out / "README.md").read_text(encoding="utf-8") == "ours"
    assert {i.instruction for i in list_items(out, "calib")} == {f"new {i}" for i in range(8)}
    assert not (out / "heldout").exists()  # no stale held-out split from the previous import


def test_cli_imports_and_prints_the_next_step(tmp_path, shots, prompts):
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["calib-import", str(shots), "--prompts", str(prompts), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "calib: 14 prompts, 6 images" in result.output and f"--calib {out}" in result.output


# ------------------------------------------------------------------------------------ bad cases

def _bad_image(shots: Path) -> Path:
    (shots / "s0.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return shots / "s0.jpg"


def _truncated_image(shots: Path) -> Path:
    data = (shots / "s1.png").read_bytes()
    (shots / "s1.png").write_bytes(data[: len(data) // 2])
    return shots / "s1.png"


BAD_PROMPTS = {
    "invalid JSON": ('{"image": "s1.png", "instruction": "x"\n', "not valid JSON"),
    "not an object": ('["s1.png", "x"]\n', "not an object"),
    "unknown field": ('{"image": "s1.png", "instruction": "x", "img": 1}\n', "unknown field"),
    "empty instruction": ('{"image": "s1.png", "instruction": " "}\n', "non-empty string"),
    "image with a folder": ('{"image": "../s1.png", "instruction": "x"}\n', "file name in the screenshot folder"),
    "bad lang": ('{"image": "s1.png", "instruction": "x", "lang": "de"}\n', "lang 'de'"),
    "empty file": ("\n\n", "is empty"),
    "unknown image": ('{"image": "s99.png", "instruction": "x"}\n', "not in the screenshot folder"),
    "screenshot without prompt": ('{"image": "s1.png", "instruction": "x"}\n', "have no prompt"),
}


@pytest.mark.parametrize("case", list(BAD_PROMPTS))
def test_malformed_prompts_name_the_prompts_file(tmp_path, shots, case):
    text, expected = BAD_PROMPTS[case]
    path = tmp_path / "prompts.jsonl"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(CalibrationError, match=expected) as info:
        import_screenshots(shots, path, tmp_path / "out")
    assert info.value.path == path and str(path) in info.value.render()
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("make", [_bad_image, _truncated_image], ids=["garbage", "truncated"])
def test_an_unreadable_screenshot_is_named(tmp_path, shots, prompts, make):
    bad = make(shots)
    with pytest.raises(CalibrationError, match="cannot be used") as info:
        import_screenshots(shots, prompts, tmp_path / "out")
    assert info.value.path == bad
    assert not (tmp_path / "out").exists()


def test_missing_folder_no_images_missing_prompts_and_wrong_suffix(tmp_path, shots, prompts):
    with pytest.raises(CalibrationError, match="does not exist") as info:
        import_screenshots(tmp_path / "nope", prompts, tmp_path / "out")
    assert info.value.path == tmp_path / "nope"
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("x", encoding="utf-8")
    with pytest.raises(CalibrationError, match="holds no images") as info:
        import_screenshots(empty, prompts, tmp_path / "out")
    assert info.value.path == empty
    with pytest.raises(CalibrationError, match="does not exist") as info:
        import_screenshots(shots, tmp_path / "missing.jsonl", tmp_path / "out")
    assert info.value.path == tmp_path / "missing.jsonl"
    csv = tmp_path / "p.csv"
    csv.write_text("a,b\n", encoding="utf-8")
    with pytest.raises(CalibrationError, match=r"\.jsonl or \.txt"):
        import_screenshots(shots, csv, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_txt_with_a_mismatched_count_names_both_counts(tmp_path, shots):
    txt = tmp_path / "p.txt"
    txt.write_text("one\ntwo\nthree\n", encoding="utf-8")
    with pytest.raises(CalibrationError, match="3 instructions but the screenshot folder has 8 images") as info:
        import_screenshots(shots, txt, tmp_path / "out")
    assert info.value.path == txt


def test_a_foreign_non_empty_output_folder_is_never_touched(tmp_path, shots, prompts):
    out = tmp_path / "project"
    (out / "calib").mkdir(parents=True)
    (out / "calib" / "mine.txt").write_text("precious", encoding="utf-8")
    (out / "src.py").write_text("print(1)", encoding="utf-8")
    before = _tree(out)
    for overwrite in (False, True):
        with pytest.raises(CalibrationError, match="not a calibration set") as info:
            import_screenshots(shots, prompts, out, overwrite=overwrite)
        assert info.value.path == out
    assert _tree(out) == before
    only_calib = tmp_path / "only_calib"
    (only_calib / "calib").mkdir(parents=True)
    (only_calib / "calib" / "mine.txt").write_text("precious", encoding="utf-8")
    with pytest.raises(CalibrationError, match="prompts.jsonl"):  # a calib/ we cannot read is not ours
        import_screenshots(shots, prompts, only_calib, overwrite=True)
    assert (only_calib / "calib" / "mine.txt").read_text(encoding="utf-8") == "precious"


def test_an_existing_calibration_set_needs_overwrite(tmp_path, shots, prompts):
    out = import_screenshots(shots, prompts, tmp_path / "out").root
    before = _tree(out)
    with pytest.raises(CalibrationError, match="--overwrite"):
        import_screenshots(shots, prompts, out, seed=3)
    assert _tree(out) == before


def test_heldout_share_outside_range_or_too_few_screenshots(tmp_path, shots, prompts):
    with pytest.raises(CalibrationError, match=r"must be in \[0, 1\)"):
        import_screenshots(shots, prompts, tmp_path / "out", heldout_share=1.0)
    one = tmp_path / "one"
    one.mkdir()
    Image.new("RGB", (50, 100)).save(one / "a.png")
    single = _jsonl(tmp_path / "one.jsonl", [{"image": "a.png", "instruction": "x"}])
    with pytest.raises(CalibrationError, match="cannot be split"):
        import_screenshots(one, single, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_error_is_typed_and_has_no_traceback(tmp_path, shots):
    txt = tmp_path / "p.txt"
    txt.write_text("only one\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["calib-import", str(shots), "--prompts", str(txt), "--out", str(tmp_path / "o")])
    assert result.exit_code == CalibrationError.exit_code
    assert str(txt) in result.output and "Traceback" not in result.output
    assert not (tmp_path / "o").exists()
