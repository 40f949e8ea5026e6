"""Draw every screen, downscale the photos, write both splits and check they do not overlap.

Determinism: all randomness comes from ``random.Random`` seeded with fixed strings (``SEED`` plus
the screen name or split), never ``hash()``, so output does not depend on ``PYTHONHASHSEED``.
Byte-identical output also needs the same font files and Pillow/zlib/libjpeg versions.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import shutil
from pathlib import Path

from PIL import Image

from trt_pipeline.errors import CalibrationError

from .canvas import WHITE, Ctx
from .fonts import Fonts
from .screens import RENDERERS
from .spec import SPLITS, Screen, Spec
from .text import has_cjk

SEED = 20250312
SS = 2  # supersampling factor: draw at 2x, downscale with LANCZOS -> anti-aliased shapes
PHOTO_MAX_SIDE = 448
JPEG_QUALITY = 90


def load_photos(names: list[str]) -> dict[str, Image.Image]:
    """The scikit-image sample photos by name, as RGB (scikit-image is a regeneration-only dependency)."""
    try:
        from skimage import data as skdata
    except ImportError as e:
        raise CalibrationError(
            "scikit-image is required to regenerate the calibration photos",
            hint="install it with `.venv/bin/python -m pip install scikit-image==0.26.0` (only needed to "
                 "regenerate calibration/; loading the committed data does not need it)") from e
    return {name: Image.fromarray(getattr(skdata, name)()).convert("RGB") for name in names}


def render(spec: Screen, fonts: Fonts, photos: dict[str, Image.Image]) -> Image.Image:
    """One screen at its pixel size: drawn at ``SS`` x in dp (360 dp wide phones, 640 dp tall tablets)."""
    w, h = spec.size
    if w > h:  # tablet landscape: dp by height
        scale = h / 640
    else:
        scale = min(w / 360, h / 720)
    img = Image.new("RGB", (w * SS, h * SS), WHITE)
    rng = random.Random(f"{SEED}/{spec.name}")
    hour, minute = rng.randint(7, 22), rng.randint(0, 59)
    clock = spec.params.get("time") or (f"{hour:02d}:{minute:02d}" if spec.lang == "zh"
                                        else f"{(hour - 1) % 12 + 1}:{minute:02d}")
    ctx = Ctx(img, fonts, spec.lang if fonts.cjk else "en", rng, photos, (0, 0, w * SS, h * SS), scale * SS,
              clock=clock, battery=spec.params.get("battery", rng.randint(18, 100)))
    RENDERERS[spec.kind](ctx, spec.params)
    return img.resize((w, h), Image.LANCZOS)


def lang_of(text: str) -> str:
    return "zh" if has_cjk(text) else "en"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_split(spec: Spec, split: str, out: Path, fonts: Fonts, photos: dict[str, Image.Image]) -> list[dict]:
    """Write ``out/<split>/`` (images and prompts.jsonl) from scratch; return its prompt rows."""
    folder = out / split
    if folder.exists():
        shutil.rmtree(folder)
    (folder / "images").mkdir(parents=True)
    # a split only ever sees its own photos: using another split's photo is a KeyError
    own = {k: v for k, v in photos.items() if spec.photo_split[k] == split}
    items: list[dict] = []
    for screen in (s for s in spec.screens if s.split == split):
        rel = f"images/{screen.name}.png"
        render(screen, fonts, own).save(folder / rel, optimize=True)
        items += [dict(instruction=p, image=rel) for p in screen.prompts]
    for ph in (p for p in spec.photos if p.split == split):
        rel = f"images/photo_{ph.name}.jpg"
        img = own[ph.name].copy()
        img.thumbnail((PHOTO_MAX_SIDE, PHOTO_MAX_SIDE), Image.LANCZOS)
        img.save(folder / rel, quality=JPEG_QUALITY, optimize=True)
        items += [dict(instruction=p, image=rel) for p in ph.prompts]
    items += [dict(instruction=p, image=None) for p in spec.text_only[split]]
    # Mix languages and apps so any prefix of the file is a usable calibration subset.
    random.Random(f"{SEED}/{split}/order").shuffle(items)
    rows = [dict(id=f"{split}-{i:03d}", split=split, lang=lang_of(it["instruction"]),
                 instruction=it["instruction"], image=it["image"]) for i, it in enumerate(items, 1)]
    with open(folder / "prompts.jsonl", "w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return rows


def generate(spec: Spec, out: Path, fonts: Fonts, photos: dict[str, Image.Image] | None = None) -> dict[str, list[dict]]:
    """Write both splits under ``out``; ``photos`` defaults to scikit-image's sample images."""
    names = [s.name for s in spec.screens] + [p.name for p in spec.photos]
    if len(names) != len(set(names)):
        raise CalibrationError("screen and photo names must be unique across splits",
                               hint="rename the duplicates in tools/make_calibration/screens.yaml")
    photos = load_photos(list(spec.photo_split)) if photos is None else photos
    items = {split: write_split(spec, split, out, fonts, photos) for split in SPLITS}
    check(out, items)
    return items


def check(out: Path, items: dict[str, list[dict]]) -> None:
    """Fail loudly if the held-out split leaks into calibration."""
    cal, held = items["calib"], items["heldout"]
    norm = lambda s: re.sub(r"\W+", "", s.lower())  # noqa: E731
    dup = {norm(r["instruction"]) for r in cal} & {norm(r["instruction"]) for r in held}
    hashes = {s: {sha256(p) for p in (out / s / "images").iterdir()} for s in SPLITS}
    names = {s: {p.name for p in (out / s / "images").iterdir()} for s in SPLITS}
    problems = [f"instructions in both splits: {sorted(dup)}"] if dup else []
    if hashes["calib"] & hashes["heldout"]:
        problems.append("identical image file in both splits")
    if names["calib"] & names["heldout"]:
        problems.append("same image file name in both splits")
    for s in SPLITS:
        unused = {f"images/{n}" for n in names[s]} - {r["image"] for r in items[s] if r["image"]}
        if unused:
            problems.append(f"unreferenced images in {s}: {sorted(unused)}")
    if problems:
        raise CalibrationError("held-out / calibration split check failed: " + "; ".join(problems), path=out,
                               hint="fix tools/make_calibration/screens.yaml or prompts.jsonl")


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
