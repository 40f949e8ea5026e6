"""The data of the synthetic set: ``screens.yaml`` (screens, photo splits) and ``prompts.jsonl``.

Why a loader with checks: the data used to be Python literals, where a typo failed at import. As
files, a wrong key, an unknown renderer or a prompt pointing at a missing screen must still fail
before anything is drawn, naming the file and the entry.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from trt_pipeline.errors import CalibrationError

HERE = Path(__file__).resolve().parent
SCREENS_FILE = HERE / "screens.yaml"
PROMPTS_FILE = HERE / "prompts.jsonl"
SPLITS = ("calib", "heldout")


@dataclass(frozen=True)
class Screen:
    name: str  # file stem, unique across both splits
    split: str
    kind: str  # key of screens.RENDERERS
    lang: str  # language of the screen's UI text
    size: tuple[int, int]  # (width, height) in pixels
    params: dict
    prompts: tuple[str, ...]


@dataclass(frozen=True)
class Photo:
    name: str  # skimage.data function name
    split: str
    prompts: tuple[str, ...]


@dataclass(frozen=True)
class Spec:
    """Everything the generator draws and writes, in file order (the order is part of the output)."""

    screens: list[Screen]
    photos: list[Photo]
    text_only: dict[str, tuple[str, ...]]

    @property
    def photo_split(self) -> dict[str, str]:
        return {p.name: p.split for p in self.photos}


def _read_prompts(path: Path) -> list[dict]:
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise CalibrationError(f"{path} line {lineno} is not valid JSON ({e.msg})", path=path) from e
        if (not isinstance(row, dict) or row.get("split") not in SPLITS
                or not isinstance(row.get("instruction"), str) or ("screen" in row and "photo" in row)):
            raise CalibrationError(
                f"{path} line {lineno}: expected {{split: calib|heldout, instruction: str}} plus at most one "
                f"of screen / photo, got {line!r}", path=path)
        rows.append(row)
    return rows


def _prompts_of(rows: list[dict], key: str, name: str, split: str, path: Path) -> tuple[str, ...]:
    mine = [r for r in rows if r.get(key) == name]
    wrong = [r["instruction"] for r in mine if r["split"] != split]
    if wrong:
        raise CalibrationError(f"{path}: prompts {wrong} name {key} {name!r} of split {split!r} "
                               "but declare another split", path=path)
    return tuple(r["instruction"] for r in mine)


def load_spec(screens_file: Path = SCREENS_FILE, prompts_file: Path = PROMPTS_FILE) -> Spec:
    """Read and cross-check both files; every prompt must belong to a known screen or photo."""
    from .screens import RENDERERS

    with open(screens_file, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    rows = _read_prompts(prompts_file)
    screens = []
    for s in doc["screens"]:
        if s["kind"] not in RENDERERS or s["split"] not in SPLITS:
            raise CalibrationError(f"{screens_file}: screen {s['name']!r} has unknown kind {s['kind']!r} or "
                                   f"split {s['split']!r}", path=screens_file,
                                   hint=f"kinds: {', '.join(RENDERERS)}; splits: {', '.join(SPLITS)}")
        screens.append(Screen(s["name"], s["split"], s["kind"], s["lang"], tuple(s["size"]), s["params"],
                              _prompts_of(rows, "screen", s["name"], s["split"], prompts_file)))
    photos = [Photo(name, split, _prompts_of(rows, "photo", name, split, prompts_file))
              for name, split in doc["photos"].items()]
    known = {("screen", s.name) for s in screens} | {("photo", p.name) for p in photos}
    for r in rows:
        for key in ("screen", "photo"):
            if key in r and (key, r[key]) not in known:
                raise CalibrationError(f"{prompts_file}: prompt {r['instruction']!r} names unknown {key} "
                                       f"{r[key]!r}", path=prompts_file, hint=f"add it to {screens_file}")
    text_only = {split: tuple(r["instruction"] for r in rows
                              if r["split"] == split and "screen" not in r and "photo" not in r)
                 for split in SPLITS}
    return Spec(screens, photos, text_only)
