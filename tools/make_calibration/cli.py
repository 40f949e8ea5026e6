"""Command line of the generator: ``python -m tools.make_calibration [--out DIR]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trt_pipeline.errors import PipelineError

from .fonts import Fonts
from .generate import folder_bytes, generate
from .spec import SPLITS, load_spec

DEFAULT_OUT = Path(__file__).resolve().parents[2] / "calibration"


def _summary(items: dict[str, list[dict]], out: Path, fonts: Fonts) -> None:
    print(f"font: {fonts.describe()}")
    for split in SPLITS:
        rows = items[split]
        n_img = len({r['image'] for r in rows if r['image']})
        langs = {lang: sum(r["lang"] == lang for r in rows) for lang in ("zh", "en")}
        print(f"{split:8s} {len(rows):3d} prompts (zh {langs['zh']}, en {langs['en']}, text-only "
              f"{sum(r['image'] is None for r in rows)}), {n_img} images, "
              f"{folder_bytes(out / split) / 1e6:.2f} MB")
    total = sum(len(v) for v in items.values())
    print(f"total    {total:3d} prompts, held-out share {len(items['heldout']) / total:.0%}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.make_calibration",
                                 description="Regenerate calibration/calib and calibration/heldout (synthetic "
                                             "phone screens, photos and prompts) deterministically.")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT,
                    help="folder to write calib/ and heldout/ into (default: the repository's calibration/)")
    ap.add_argument("--latin-only", action="store_true", help="ignore CJK fonts (tests the fallback path)")
    ap.add_argument("--builtin-font", action="store_true", help="ignore all font files, use PIL's built-in font")
    args = ap.parse_args(argv)
    fonts = Fonts(latin_only=args.latin_only, builtin=args.builtin_font)
    if not fonts.cjk:
        print("warning: no CJK font found; Chinese screens are drawn with English UI text "
              "(Debian: apt-get install fonts-noto-cjk)", file=sys.stderr)
    try:
        items = generate(load_spec(), args.out, fonts)
    except PipelineError as error:
        print(f"error: {error.render()}", file=sys.stderr)
        return error.exit_code
    _summary(items, args.out, fonts)
    return 0
