"""Reader for the committed calibration and held-out data sets (``calibration/{calib,heldout}``).

Each split folder holds ``prompts.jsonl`` (one JSON object per line with ``id``, ``split``,
``lang``, ``instruction``, ``image``) and ``images/`` (the screenshots and photos that lines point
to, by a path relative to the split folder; ``image`` is ``null`` for text-only items).
``python -m tools.make_calibration`` regenerates the committed synthetic splits and
``autoglm-trt calib-import`` builds a split from real screenshots; ``calibration/README.md``
documents both, and sources and licenses.

Why the checks are strict: INT8 scales are fitted to whatever this reader returns. A silently
skipped line or image shrinks the calibration set without anyone noticing, and a held-out item
that slips into the calibration split makes the accuracy report meaningless. So every problem is
a :class:`~trt_pipeline.errors.CalibrationError` naming the file (and line) and what to do,
raised before any quantization work starts. Images are decoded lazily (:func:`load_image`) so
listing a split stays cheap; decoding errors still name the file.

No torch here: this module is imported by CPU-only stages and tests.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from trt_pipeline.errors import CalibrationError

SPLITS: tuple[str, ...] = ("calib", "heldout")
"""Split names. ``calib`` fits INT8 scales; ``heldout`` only measures accuracy afterwards."""

LANGS: tuple[str, ...] = ("zh", "en")
PROMPTS_FILE = "prompts.jsonl"
IMAGES_DIR = "images"
FIELDS: tuple[str, ...] = ("id", "split", "lang", "instruction", "image")

_REGENERATE = ("regenerate it with `python -m tools.make_calibration` (synthetic set) "
               "or `autoglm-trt calib-import` (your screenshots)")
_EXPECTED = (f"a split folder (e.g. calibration/calib) must contain {PROMPTS_FILE} "
             f"(one JSON object per line with fields {', '.join(FIELDS)}) and an {IMAGES_DIR}/ folder")


@dataclass(frozen=True)
class CalibrationItem:
    """One agent instruction, optionally paired with the screen image it refers to.

    Attributes:
        id: unique within its split (``calib-001``); stable across regenerations.
        split: ``"calib"`` or ``"heldout"``.
        lang: ``"zh"`` or ``"en"``: the language of ``instruction``.
        instruction: what the user asks the phone agent to do.
        image_path: the image file (already checked to exist), or ``None`` for a text-only item.
    """

    id: str
    split: str
    lang: str
    instruction: str
    image_path: Path | None

    @property
    def has_image(self) -> bool:
        return self.image_path is not None


def default_root() -> Path:
    """The ``calibration/`` folder of a source checkout (where the committed data lives)."""
    return Path(__file__).resolve().parents[2] / "calibration"


def list_items(root: Path, split: str) -> list[CalibrationItem]:
    """Items of one split under a calibration root: ``list_items(Path("calibration"), "calib")``."""
    if split not in SPLITS:
        raise CalibrationError(
            f"unknown calibration split {split!r}", path=Path(root),
            hint=f"use one of: {', '.join(SPLITS)} ('heldout' is for evaluation only, never for calibration)")
    return load_split(Path(root) / split, split=split)


def load_split(folder: Path, split: str | None = None) -> list[CalibrationItem]:
    """Read and validate one split folder; every referenced image must exist.

    Args:
        folder: e.g. ``calibration/calib`` or ``calibration/heldout``.
        split: the split every line must declare. Defaults to the folder's name when that is a
            split name (so a held-out line copied into ``calib/`` is refused), else unchecked.

    Raises:
        CalibrationError: folder or prompts file missing, file empty, a line that is not a JSON
            object with the expected fields and values (message names file and line), a
            duplicate id, or an image path that is absolute, escapes the folder or does not exist.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CalibrationError(
            f"calibration folder {folder} does not exist or is not a folder", path=folder,
            hint=f"{_EXPECTED}; {_REGENERATE}")
    prompts = folder / PROMPTS_FILE
    if not prompts.is_file():
        raise CalibrationError(
            f"calibration folder {folder} has no {PROMPTS_FILE}", path=prompts,
            hint=f"{_EXPECTED}; {_REGENERATE}")
    if split is None and folder.name in SPLITS:
        split = folder.name
    if split is not None and split not in SPLITS:
        raise CalibrationError(f"unknown calibration split {split!r}", path=folder,
                               hint=f"use one of: {', '.join(SPLITS)}")

    try:
        text = prompts.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise CalibrationError(f"cannot read {prompts}: {e}", path=prompts,
                               hint=f"it must be UTF-8 JSON Lines; {_REGENERATE}") from e

    items: list[CalibrationItem] = []
    seen: dict[str, int] = {}
    root = folder.resolve()
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue  # blank lines (e.g. a trailing newline) are allowed in JSON Lines
        item = _parse_line(line, prompts, lineno, folder, root, split)
        if item.id in seen:
            raise CalibrationError(
                f"{prompts} line {lineno}: duplicate id {item.id!r} (first on line {seen[item.id]})",
                path=prompts, hint="ids must be unique within a split")
        seen[item.id] = lineno
        items.append(item)
    if not items:
        raise CalibrationError(
            f"{prompts} is empty: no calibration items", path=prompts,
            hint=f"INT8 calibration needs data; {_EXPECTED}; {_REGENERATE}")
    return items


def _parse_line(line: str, prompts: Path, lineno: int, folder: Path, root: Path,
                split: str | None) -> CalibrationItem:
    where = f"{prompts} line {lineno}"
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise CalibrationError(f"{where} is not valid JSON ({e.msg} at column {e.colno})", path=prompts,
                               hint="each line must be one JSON object") from e
    if not isinstance(row, dict):
        raise CalibrationError(f"{where} is a JSON {type(row).__name__}, expected an object", path=prompts,
                               hint=f"each line must be an object with fields {', '.join(FIELDS)}")
    missing = [f for f in FIELDS if f not in row]
    if missing:
        raise CalibrationError(f"{where} lacks field(s) {', '.join(missing)}", path=prompts,
                               hint=f"each line needs {', '.join(FIELDS)} (image may be null)")
    for f in ("id", "split", "lang", "instruction"):
        if not isinstance(row[f], str) or not row[f].strip():
            raise CalibrationError(f"{where}: field {f!r} must be a non-empty string, got {row[f]!r}",
                                   path=prompts)
    if row["split"] not in SPLITS:
        raise CalibrationError(f"{where}: split {row['split']!r} is not one of {', '.join(SPLITS)}",
                               path=prompts)
    if split is not None and row["split"] != split:
        raise CalibrationError(
            f"{where}: item {row['id']!r} belongs to split {row['split']!r} but sits in the {split!r} folder",
            path=prompts, hint="held-out items must never be used for calibration; keep each split in its folder")
    if row["lang"] not in LANGS:
        raise CalibrationError(f"{where}: lang {row['lang']!r} is not one of {', '.join(LANGS)}", path=prompts)

    image = row["image"]
    image_path: Path | None = None
    if image is not None:
        if not isinstance(image, str) or not image.strip():
            raise CalibrationError(f"{where}: image must be a relative path or null, got {image!r}",
                                   path=prompts)
        rel = Path(image)
        candidate = folder / rel
        if rel.is_absolute() or not _inside(candidate, root):
            raise CalibrationError(
                f"{where}: image path {image!r} must be relative to {folder} and stay inside it", path=prompts,
                hint=f"put the file under {folder / IMAGES_DIR} and write e.g. \"{IMAGES_DIR}/name.png\"")
        if not candidate.is_file():
            raise CalibrationError(
                f"{where}: image {candidate} does not exist", path=candidate,
                hint=f"add the file or fix the path (relative to {folder}); {_REGENERATE}")
        image_path = candidate
    return CalibrationItem(id=row["id"], split=row["split"], lang=row["lang"],
                           instruction=row["instruction"], image_path=image_path)


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root)
    except ValueError:
        return False
    return True


def load_image(item: CalibrationItem) -> Image.Image:
    """Decode an item's image fully into memory as RGB.

    Decoding is forced here (``Image.load``) rather than left to the first pixel access, so a
    truncated or corrupt file fails with its name instead of deep inside preprocessing.

    Raises:
        CalibrationError: the item has no image, or the file cannot be read or decoded.
    """
    path = item.image_path
    if path is None:
        raise CalibrationError(f"calibration item {item.id!r} is text-only and has no image",
                               hint="check item.has_image before loading")
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB")
    except FileNotFoundError as e:
        raise CalibrationError(f"image {path} of item {item.id!r} does not exist", path=path,
                               hint=_REGENERATE) from e
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
        raise CalibrationError(f"image {path} of item {item.id!r} cannot be decoded: {e}", path=path,
                               hint=f"the file is truncated or not an image; {_REGENERATE}") from e
