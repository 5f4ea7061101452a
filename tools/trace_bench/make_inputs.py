#!/usr/bin/env python3
"""Writes the benchmark bitmaps for run.sh (deterministic):

- silhouette-3000.pbm: a 3000x3000 smooth silhouette (sum of Gaussian bumps) with holes and
  islands inside the holes;
- text-2480x1600.pbm: a 2480x1600 page of text (A4 width at 300 dpi) rendered from DejaVu Sans
  and DejaVu Serif (Debian fonts-dejavu-core) at 8-14 pt, thresholded at 50%;
- glyphs-2400x3000.{png,pgm,pbm}: a page of display type (60-400 px glyphs in eight DejaVu
  faces, bold, italic, condensed, mono), anti-aliased: the PNG and the PGM hold the same grey
  pixels, the PBM is them thresholded at 50% like potrace's default -k 0.5. No tuning was done
  on this page; it is the check that the figures do not depend on the two inputs above;
- silhouette-3000.png: the silhouette as a 1-bit PNG, for the generic (image-decoding) path.

Usage: make_inputs.py OUTDIR   (needs numpy and Pillow; /work/venv has both)
"""
import random
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

DEJAVU = "/usr/share/fonts/truetype/dejavu/"
FONTS = [DEJAVU + "DejaVuSans.ttf", DEJAVU + "DejaVuSerif.ttf"]
DISPLAY_FONTS = [
    DEJAVU + f
    for f in [
        "DejaVuSans-Bold.ttf",
        "DejaVuSans-Oblique.ttf",
        "DejaVuSerif-BoldItalic.ttf",
        "DejaVuSerif-Italic.ttf",
        "DejaVuSansCondensed-Bold.ttf",
        "DejaVuSerifCondensed.ttf",
        "DejaVuSansMono-Bold.ttf",
        "DejaVuSans-ExtraLight.ttf",
    ]
]
GLYPHS = "AaBbCcDdEeFfGgHhJjKkMmNnOoPpQqRrSsTtUuWwXxYyZz&@?%$#0123456789"
WORDS = (
    "potrace traces bitmaps into smooth scalable curves the quick brown fox jumps over a lazy "
    "dog sphinx of black quartz judge my vow polygon vertex adjustment smoothing corner optimal "
    "Bezier segment tolerance 0123456789 ( ) , ; : ! ?"
).split()


def silhouette(side: int) -> np.ndarray:
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:side, 0:side].astype(np.float32) + 0.5
    field = np.zeros((side, side), np.float32)
    bumps = [(rng.uniform(0.25, 0.75) * side, rng.uniform(0.25, 0.75) * side,
              rng.uniform(0.1, 0.22) * side) for _ in range(9)]
    for cx, cy, r in bumps:
        field += np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (r * r))
    ink = field > 0.5
    for cx, cy, r in bumps[:4]:
        d = np.sqrt((x - cx) ** 2 + (y - cy) ** 2)
        ring = d < 0.4 * r
        ink[ring] = d[ring] < 0.15 * r
    return ink


def text_page(width: int, height: int) -> np.ndarray:
    rnd = random.Random(3)
    img = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(img)
    y = 60
    while True:
        size = rnd.choice([33, 38, 42, 50, 58])  # 8-14 pt at 300 dpi
        font = ImageFont.truetype(rnd.choice(FONTS), size)
        if y + size * 1.3 > height - 60:
            break
        line = ""
        while font.getlength(line) < width - 300:
            line += rnd.choice(WORDS) + " "
        draw.text((120, y), line, font=font, fill=0)
        y += int(size * 1.35)
    return np.asarray(img) < 128


def glyph_page(width: int, height: int) -> np.ndarray:
    """Grey levels (0 = black) of a page of large anti-aliased glyphs."""
    rnd = random.Random(11)
    img = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(img)
    y = 40
    while True:
        size = rnd.choice([60, 90, 130, 180, 260, 400])
        if y + size * 1.2 > height - 40:
            break
        font = ImageFont.truetype(rnd.choice(DISPLAY_FONTS), size)
        x = 40
        while True:
            glyph = rnd.choice(GLYPHS)
            advance = font.getlength(glyph)
            if x + advance > width - 40:
                break
            draw.text((x, y), glyph, font=font, fill=0)
            x += int(advance) + rnd.randint(4, 30)
        y += int(size * 1.25)
    return np.asarray(img)


def write_pbm(path: Path, ink: np.ndarray) -> None:
    h, w = ink.shape
    packed = np.packbits(ink.astype(np.uint8), axis=1)
    path.write_bytes(f"P4\n{w} {h}\n".encode() + packed.tobytes())


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    out.mkdir(parents=True, exist_ok=True)
    sil = silhouette(3000)
    write_pbm(out / "silhouette-3000.pbm", sil)
    Image.fromarray(~sil).convert("1").save(out / "silhouette-3000.png")
    write_pbm(out / "text-2480x1600.pbm", text_page(2480, 1600))
    grey = glyph_page(2400, 3000)
    Image.fromarray(grey).save(out / "glyphs-2400x3000.png")
    Image.fromarray(grey).save(out / "glyphs-2400x3000.pgm")
    # potrace -k 0.5 on the PGM: black when value <= 0.5 * 255, i.e. value <= 127.
    write_pbm(out / "glyphs-2400x3000.pbm", grey <= 127)


if __name__ == "__main__":
    main()
