"""The synthetic-set generator (tools/make_calibration) reproduces the committed calibration/ set.

Byte-identical regeneration needs scikit-image (the photos) and the Noto Sans CJK font the
committed files were drawn with; without them that test is skipped and says which is missing.
The renderer tests below need neither: they draw every screen of screens.yaml with stand-in photos
and whatever Latin font exists, and check the output is deterministic and has the declared size.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from pathlib import Path

import pytest
from PIL import Image

from trt_pipeline.errors import CalibrationError

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "calibration"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tools.make_calibration.fonts import Fonts  # noqa: E402
from tools.make_calibration.generate import generate, render  # noqa: E402
from tools.make_calibration.spec import SPLITS, load_spec  # noqa: E402


def _digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for split in SPLITS for p in sorted((root / split).rglob("*")) if p.is_file()}


def _stand_in_photos(names: list[str]) -> dict[str, Image.Image]:
    """Deterministic gradients in place of scikit-image's photos (same role, no download, no dependency)."""
    photos = {}
    for i, name in enumerate(names):
        grad = Image.linear_gradient("L").resize((300 + 40 * i, 260))
        photos[name] = Image.merge("RGB", (grad, grad.rotate(90), Image.new("L", grad.size, 40 * i)))
    return photos


def test_spec_matches_the_committed_prompt_files():
    spec = load_spec()
    for split in SPLITS:
        committed = [json.loads(line) for line in (COMMITTED / split / "prompts.jsonl").read_text("utf-8").splitlines()]
        mine = ([p for s in spec.screens if s.split == split for p in s.prompts]
                + [p for ph in spec.photos if ph.split == split for p in ph.prompts] + list(spec.text_only[split]))
        assert sorted(mine) == sorted(row["instruction"] for row in committed)
    assert len(spec.screens) == 34 and len(spec.photos) == 6


def test_regenerates_the_committed_set_byte_identically(tmp_path):
    if importlib.util.find_spec("skimage") is None:
        pytest.skip("scikit-image not installed (pip install scikit-image==0.26.0): photos cannot be regenerated")
    fonts = Fonts()
    if not fonts.regular or "NotoSansCJK" not in fonts.regular:
        pytest.skip("Noto Sans CJK not installed (apt-get install fonts-noto-cjk): the committed screens use it")
    generate(load_spec(), tmp_path, fonts)
    assert _digests(tmp_path) == _digests(COMMITTED)


def test_every_screen_renders_deterministically_at_its_size():
    spec = load_spec()
    fonts = Fonts(latin_only=True)
    photos = _stand_in_photos(list(spec.photo_split))
    for screen in spec.screens:
        own = {k: v for k, v in photos.items() if spec.photo_split[k] == screen.split}
        img = render(screen, fonts, own)
        assert img.size == screen.size, screen.name
        colors = img.resize((32, 32)).getcolors(32 * 32)
        assert len(colors) > 8, f"{screen.name} is (nearly) blank"
    first = spec.screens[0]
    assert render(first, fonts, photos).tobytes() == render(first, fonts, photos).tobytes()


def test_a_prompt_for_an_unknown_screen_names_the_file(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"split": "calib", "screen": "no_such_screen", "instruction": "x"}) + "\n",
                       encoding="utf-8")
    with pytest.raises(CalibrationError, match="no_such_screen") as info:
        load_spec(prompts_file=prompts)
    assert info.value.path == prompts


def test_a_screen_may_not_show_a_photo_of_the_other_split(tmp_path):
    spec = load_spec()
    heldout_only = {k: v for k, v in _stand_in_photos(list(spec.photo_split)).items()
                    if spec.photo_split[k] == "heldout"}
    music = next(s for s in spec.screens if s.name == "music_en")  # shows the calib photo "astronaut"
    with pytest.raises(KeyError):
        render(music, Fonts(latin_only=True), heldout_only)
