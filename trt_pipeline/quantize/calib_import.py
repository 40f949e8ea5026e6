"""Turn a folder of real screenshots plus their instructions into a calibration root.

Why: the committed ``calibration/`` set is drawn by a program (``tools/make_calibration``); flat
synthetic screens have other activation statistics than real phone screenshots, so INT8 scales
fitted on them are a CI fixture, not production scales. Production calibration needs the user's
own screenshots. This module writes them in exactly the layout ``precision int8 --calib DIR``
reads (:mod:`trt_pipeline.quantize.dataset`)::

    OUT/calib/prompts.jsonl     OUT/calib/images/*      fits the INT8 scales
    OUT/heldout/prompts.jsonl   OUT/heldout/images/*    accuracy gate only, never calibration
    OUT/calib-import.json       what was imported from where (marks the folder as ours)

Screenshots are split by image, never by prompt, so no held-out pixel is ever calibrated on.
Image bytes are copied unchanged (no re-encoding changes the statistics being calibrated).

Prompts file, either
  * ``.jsonl``: one object per line, ``{"image": "home.png", "instruction": "Open WeChat"}``
    (``image`` is a file name in the screenshot folder, or null for a text-only prompt; optional
    ``lang`` "zh"/"en", else detected); an image may have several prompts, each needs one; or
  * ``.txt``: one instruction per non-empty line, paired with the screenshots in file-name order
    (the counts must match).

Every problem (missing folder, no images, an undecodable image, a malformed prompts file, counts
that do not match, an output folder that is not a calibration set) is a
:class:`~trt_pipeline.errors.CalibrationError` naming the file, raised before anything is written.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from trt_pipeline.errors import CalibrationError, PipelineError
from trt_pipeline.quantize.dataset import IMAGES_DIR, LANGS, PROMPTS_FILE, SPLITS, load_split

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
MANIFEST = "calib-import.json"
OWNED_ENTRIES = frozenset({*SPLITS, MANIFEST, "README.md"})
"""What may sit in an output folder we replace: our splits, our manifest, the documentation."""
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


@dataclass(frozen=True)
class Prompt:
    instruction: str
    image: str | None  # file name in the screenshot folder, None for text-only
    lang: str


@dataclass(frozen=True)
class ImportResult:
    """What :func:`import_screenshots` wrote: the root and prompts/images per split."""

    root: Path
    prompts: dict[str, int]
    images: dict[str, int]


def list_screenshots(folder: Path) -> list[Path]:
    """Image files directly in ``folder`` (by suffix), sorted by name; each one must decode."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CalibrationError(f"screenshot folder {folder} does not exist or is not a folder", path=folder,
                               hint="pass a folder of PNG/JPEG screenshots")
    images = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise CalibrationError(f"screenshot folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})",
                               path=folder, hint="put the screenshots directly in that folder (not in subfolders)")
    for path in images:
        check_image(path)
    return images


def check_image(path: Path) -> None:
    """Decode ``path`` fully with the model's bomb guard and aspect-ratio limit; fail naming it."""
    from trt_pipeline.models.glm4v.processing import MAX_ASPECT_RATIO, decode_image

    try:
        with open(path, "rb") as handle:
            image = decode_image(handle, source=str(path), path=path)
    except (OSError, PipelineError) as error:
        message = error.message if isinstance(error, PipelineError) else str(error)
        raise CalibrationError(f"screenshot {path} cannot be used: {message}", path=path,
                               hint="replace or remove the file; it must be a readable PNG/JPEG") from None
    width, height = image.size
    if max(width, height) / min(width, height) >= MAX_ASPECT_RATIO:
        raise CalibrationError(f"screenshot {path} is {width}x{height}, an aspect ratio of {MAX_ASPECT_RATIO}:1 "
                               "or more, which GLM-4.1V's image processor refuses", path=path,
                               hint="crop or pad the image")


def _lang(text: str, declared: object, where: str, path: Path) -> str:
    if declared is None:
        return "zh" if _CJK.search(text) else "en"
    if declared not in LANGS:
        raise CalibrationError(f"{where}: lang {declared!r} is not one of {', '.join(LANGS)}", path=path,
                               hint="omit lang to detect it from the instruction")
    return str(declared)


def _parse_jsonl_line(line: str, where: str, path: Path) -> Prompt:
    expected = 'one JSON object per line: {"image": "name.png" or null, "instruction": "..."}'
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise CalibrationError(f"{where} is not valid JSON ({e.msg} at column {e.colno})", path=path,
                               hint=expected) from None
    if not isinstance(row, dict) or "instruction" not in row:
        raise CalibrationError(f"{where} is not an object with an instruction", path=path, hint=expected)
    unknown = set(row) - {"image", "instruction", "lang"}
    if unknown:
        raise CalibrationError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}", path=path, hint=expected)
    text, image = row["instruction"], row.get("image")
    if not isinstance(text, str) or not text.strip():
        raise CalibrationError(f"{where}: instruction must be a non-empty string", path=path, hint=expected)
    if image is not None and (not isinstance(image, str) or Path(image).name != image or not image.strip()):
        raise CalibrationError(f"{where}: image must be a file name in the screenshot folder or null, "
                               f"got {image!r}", path=path, hint=expected)
    return Prompt(text.strip(), image, _lang(text, row.get("lang"), where, path))


def read_prompts(path: Path, images: list[Path]) -> list[Prompt]:
    """Prompts of ``path`` (.jsonl or .txt, see the module doc) matched to the screenshots."""
    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"prompts file {path} does not exist", path=path,
                               hint="pass --prompts FILE (.jsonl with image + instruction, or .txt)")
    if path.suffix.lower() not in (".jsonl", ".txt"):
        raise CalibrationError(f"prompts file {path} must end in .jsonl or .txt", path=path)
    try:
        lines = [(n, line) for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                 if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise CalibrationError(f"cannot read prompts file {path}: {e}", path=path, hint="it must be UTF-8 text") from None
    if not lines:
        raise CalibrationError(f"prompts file {path} is empty", path=path, hint="write one prompt per line")
    if path.suffix.lower() == ".txt":
        if len(lines) != len(images):
            raise CalibrationError(
                f"prompts file {path} has {len(lines)} instructions but the screenshot folder has "
                f"{len(images)} images", path=path,
                hint="a .txt file needs exactly one line per screenshot, in file-name order; "
                     "use .jsonl to give several prompts per image")
        return [Prompt(line.strip(), img.name, _lang(line, None, "", path)) for (_, line), img in zip(lines, images)]
    prompts = [_parse_jsonl_line(line, f"{path} line {n}", path) for n, line in lines]
    _check_coverage(prompts, images, path)
    return prompts


def _check_coverage(prompts: list[Prompt], images: list[Path], path: Path) -> None:
    names = {p.name for p in images}
    named = {p.image for p in prompts if p.image is not None}
    missing, unused = sorted(named - names), sorted(names - named)
    if missing:
        raise CalibrationError(f"prompts file {path} names {len(missing)} image(s) not in the screenshot folder "
                               f"{images[0].parent}: {', '.join(missing[:5])}", path=path,
                               hint="fix the names (file names only, no folders) or add the screenshots")
    if unused:
        raise CalibrationError(f"{len(unused)} screenshot(s) in {images[0].parent} have no prompt in {path}: "
                               f"{', '.join(unused[:5])}", path=path,
                               hint="give every screenshot at least one instruction, or move it out of the folder")


def split_prompts(prompts: list[Prompt], heldout_share: float, seed: int,
                  content: dict[str, str] | None = None) -> dict[str, list[Prompt]]:
    """Deterministic split by image content; text-only prompts are split by prompt.

    All prompts of a screenshot go to one split, and so do byte-identical screenshots under
    different names (``content`` maps file name to sha256), so no held-out pixels are calibrated on.
    """
    if not 0.0 <= heldout_share < 1.0:
        raise CalibrationError(f"--heldout-share {heldout_share} must be in [0, 1)",
                               hint="0.25 holds a quarter of the screenshots out for the accuracy gate")
    key = (lambda name: content[name]) if content else (lambda name: name)
    images = sorted({key(p.image) for p in prompts if p.image is not None})
    texts = [p for p in prompts if p.image is None]
    rng = random.Random(f"calib-import/{seed}")
    rng.shuffle(images)
    rng.shuffle(texts)
    n_held = math.ceil(heldout_share * len(images)) if heldout_share > 0 else 0
    if heldout_share > 0 and len(images) - n_held < 1:
        raise CalibrationError(f"{len(images)} screenshot(s) cannot be split into a calibration and a held-out part",
                               hint="add screenshots, or pass --heldout-share 0 (then bring your own heldout/)")
    held = set(images[:n_held])
    held_texts = {id(p) for p in texts[: math.floor(heldout_share * len(texts))]}
    out: dict[str, list[Prompt]] = {s: [] for s in SPLITS}
    for p in prompts:
        is_held = key(p.image) in held if p.image is not None else id(p) in held_texts
        out["heldout" if is_held else "calib"].append(p)
    return {s: rows for s, rows in out.items() if rows}


def check_output(out: Path, overwrite: bool) -> None:
    """Refuse to write into a folder that is not empty and not a calibration set (or without --overwrite)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise CalibrationError(f"output {out} exists and is not a folder", path=out, hint="pass another --out")
    entries = {p.name for p in out.iterdir()}
    if not entries:
        return
    foreign = sorted(entries - OWNED_ENTRIES)
    if foreign or not entries & set(SPLITS):
        raise CalibrationError(
            f"output folder {out} is not empty and not a calibration set (it holds "
            f"{', '.join((foreign or sorted(entries))[:5])}{', ...' if len(foreign or entries) > 5 else ''})",
            path=out, hint="pass an empty or new folder; calib-import only replaces calib/ and heldout/ it can read")
    for split in sorted(entries & set(SPLITS)):
        load_split(out / split, split=split)  # raises naming the file if it is not a calibration split
    if not overwrite:
        raise CalibrationError(f"output folder {out} already holds a calibration set", path=out,
                               hint="pass --overwrite to replace its calib/ and heldout/ (README.md is kept)")


def _write_split(folder: Path, split: str, prompts: list[Prompt], source: Path) -> None:
    (folder / IMAGES_DIR).mkdir(parents=True)
    lines = []
    for i, p in enumerate(prompts, 1):
        rel = None
        if p.image is not None:
            rel = f"{IMAGES_DIR}/{p.image}"
            if not (folder / rel).exists():
                shutil.copyfile(source / p.image, folder / rel)
        lines.append(json.dumps({"id": f"{split}-{i:03d}", "split": split, "lang": p.lang,
                                 "instruction": p.instruction, "image": rel}, ensure_ascii=False))
    (folder / PROMPTS_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
    load_split(folder, split=split)  # what precision int8 will read back


def _install(staging: Path, out: Path) -> None:
    """Move the staged splits and manifest into ``out``, dropping splits the import did not write."""
    out.mkdir(parents=True, exist_ok=True)
    for name in (*SPLITS, MANIFEST):
        old = out / name
        if old.is_dir():
            shutil.rmtree(old)
        elif old.exists():
            old.unlink()
        if (staging / name).exists():
            (staging / name).rename(old)


def import_screenshots(screenshots: Path, prompts_file: Path, out: Path, *, heldout_share: float = 0.25,
                       seed: int = 0, overwrite: bool = False) -> ImportResult:
    """Write ``out/calib`` and ``out/heldout`` from real screenshots and their instructions.

    Everything is validated first; the splits are built in a staging folder beside ``out`` and
    moved in only when both read back cleanly, so a failure leaves ``out`` as it was.
    """
    screenshots, prompts_file, out = Path(screenshots), Path(prompts_file), Path(out)
    images = list_screenshots(screenshots)
    prompts = read_prompts(prompts_file, images)
    content = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in images}
    splits = split_prompts(prompts, heldout_share, seed, content)
    check_output(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.calib-import-", dir=out.parent) as tmp:
        staging = Path(tmp)
        for split, rows in splits.items():
            _write_split(staging / split, split, rows, screenshots)
        counts = {s: len(rows) for s, rows in splits.items()}
        n_images = {s: len({p.image for p in rows if p.image}) for s, rows in splits.items()}
        manifest = {"source": str(screenshots.resolve()), "prompts": str(prompts_file.resolve()),
                    "heldout_share": heldout_share, "seed": seed, "prompts_per_split": counts,
                    "images_per_split": n_images}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        _install(staging, out)
    return ImportResult(out, counts, n_images)
