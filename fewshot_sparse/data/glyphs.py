"""The built-in default dataset: Omniglot-style character glyphs, no download.

Every character that is drawn by several of the TrueType fonts shipped inside
matplotlib (``mpl-data/fonts/ttf``: DejaVu, STIX, Computer Modern) is a class; every
instance is that character in one of those fonts, put through a seeded random affine
map and a random stroke width, rendered at twice the target size and downsampled.

Which (character, font) pairs count is checked, not assumed: the font's cmap
(read with fontTools) must map the character, the render must have ink, must not be
identical to the font's ``.notdef`` box and must fit the canvas. Placeholder fonts
(LastResort) and the Computer Modern fonts with symbol encodings are skipped; the other
Computer Modern faces count for ASCII letters and digits only. Characters that draw
like an earlier one (Latin ``A`` / Greek ``Α`` / Cyrillic ``А``), compatibility and
precomposed characters, marks, spaces and controls are left out. Classes are split
train/val/test by Unicode block, so the three splits hold disjoint scripts and symbol
families, as Omniglot's alphabets are.

Everything is a pure function of the seed (``np.random.Generator``) and the installed
fonts; the class table does not depend on the seed.
"""

from __future__ import annotations

import functools
import math
import os
import threading
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..errors import DataError

__all__ = ["GlyphClass", "font_dir", "glyph_fonts", "glyph_table", "render_glyph_class",
           "SPLIT_FRACTIONS"]

# Fraction of classes per split (miniImageNet's 64/16/20).
SPLIT_FRACTIONS = {"train": 0.64, "val": 0.16, "test": 0.20}
MIN_FONTS = 3           # a character must be drawn by at least this many fonts
REF_CANVAS = 48         # validation renders (independent of the output size)
EM_FRACTION = 0.6       # font size as a fraction of the canvas
BASELINE = 0.70         # baseline height as a fraction of the canvas
_SKIP_FONTS = ("LastResort",)                       # placeholder glyphs for every codepoint
_SYMBOL_ENCODED = ("cmex10", "cmsy10", "cmmi10")    # cmaps that do not follow Unicode
_ASCII_ONLY_PREFIX = "cm"                           # other Computer Modern: ASCII alnum only
_PREFERRED_REFERENCE = ("DejaVuSans.ttf", "DejaVuSerif.ttf", "STIXGeneral.ttf")


@dataclass(frozen=True)
class GlyphClass:
    codepoint: int
    block: str
    fonts: tuple[str, ...]  # font file names that draw it, in a fixed order

    @property
    def char(self) -> str:
        return chr(self.codepoint)

    @property
    def name(self) -> str:
        return f"U+{self.codepoint:04X} {unicodedata.name(self.char, '?')}"


def font_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


@functools.lru_cache(maxsize=None)
def glyph_fonts() -> dict[str, frozenset[int]]:
    """Font file name -> set of codepoints its Unicode cmap maps (placeholders skipped)."""
    from fontTools.ttLib import TTFont

    fonts: dict[str, frozenset[int]] = {}
    folder = font_dir()
    for path in sorted(folder.glob("*.[ot]tf")):
        stem = path.stem
        if stem.startswith(_SKIP_FONTS) or stem in _SYMBOL_ENCODED:
            continue
        try:
            cmap = TTFont(str(path), lazy=True, fontNumber=0).getBestCmap() or {}
        except Exception:  # an unreadable font is simply not used
            continue
        cps = frozenset(cmap)
        if stem.startswith(_ASCII_ONLY_PREFIX):
            cps = frozenset(cp for cp in cps if chr(cp).isascii() and chr(cp).isalnum())
        if cps:
            fonts[path.name] = cps
    if len(fonts) < MIN_FONTS:
        raise DataError(f"{folder}: found {len(fonts)} usable fonts, need at least {MIN_FONTS}")
    return fonts


_local = threading.local()


def _font(name: str, size: int) -> ImageFont.FreeTypeFont:
    """One FreeType face per thread (a face must not be used by two threads at once)."""
    cache = _local.__dict__.setdefault("fonts", {})
    font = cache.get((name, size))
    if font is None:
        font = cache[(name, size)] = ImageFont.truetype(str(font_dir() / name), size=size)
    return font


def _candidate(cp: int) -> bool:
    ch = chr(cp)
    cat = unicodedata.category(ch)
    if cat[0] not in "LNSP" or cat == "Co":
        return False
    # precomposed / compatibility characters draw like their base characters
    return unicodedata.decomposition(ch) == ""


def _draw(name: str, ch: str, canvas: int, stroke: int = 0) -> Image.Image:
    font = _font(name, max(4, round(EM_FRACTION * canvas)))
    im = Image.new("L", (canvas, canvas), 0)
    ImageDraw.Draw(im).text((canvas / 2, BASELINE * canvas), ch, font=font, fill=255,
                            anchor="ms", stroke_width=stroke, stroke_fill=255)
    return im


@functools.lru_cache(maxsize=None)
def _notdef(name: str) -> tuple[tuple | None, bytes]:
    im = _draw(name, "\U0010fffd", REF_CANVAS)  # a private-use codepoint: draws .notdef
    return im.getbbox(), im.tobytes()


def _valid(name: str, ch: str) -> Image.Image | None:
    """Reference render of ``ch`` in font ``name``, or None if it is not a real glyph."""
    im = _draw(name, ch, REF_CANVAS)
    box = im.getbbox()
    if box is None:
        return None  # blank
    if box[0] == 0 or box[1] == 0 or box[2] == REF_CANVAS or box[3] == REF_CANVAS:
        return None  # clipped: does not fit the canvas
    nd_box, nd_bytes = _notdef(name)
    if box == nd_box and im.tobytes() == nd_bytes:
        return None  # the .notdef box
    return im


def _block(ch: str) -> str:
    from fontTools import unicodedata as fud

    return fud.block(ch)


@functools.lru_cache(maxsize=None)
def glyph_table(min_fonts: int = MIN_FONTS) -> dict[str, tuple[GlyphClass, ...]]:
    """The class table: split -> classes (sorted by codepoint). Renders one reference
    image per (character, font) pair, nothing else; a few seconds."""
    fonts = glyph_fonts()
    names = sorted(fonts)
    counts: dict[int, int] = {}
    for cps in fonts.values():
        for cp in cps:
            counts[cp] = counts.get(cp, 0) + 1
    candidates = sorted(cp for cp, n in counts.items() if n >= min_fonts and _candidate(cp))

    ref_order = [n for n in _PREFERRED_REFERENCE if n in fonts] + names
    kept: list[GlyphClass] = []
    thumbs: list[np.ndarray] = []
    for cp in candidates:
        ch = chr(cp)
        good, ref = [], None
        for name in ref_order:
            if cp in fonts[name] and name not in good:
                a = _valid(name, ch)
                if a is not None:
                    good.append(name)
                    ref = a if ref is None else ref
        if len(good) < min_fonts:
            continue
        kept.append(GlyphClass(cp, _block(ch), tuple(sorted(good))))
        thumbs.append(np.asarray(ref.reduce(REF_CANVAS // 16), dtype=np.float32).ravel())
    kept = _drop_lookalikes(kept, np.asarray(thumbs, dtype=np.float32))
    return _split_by_block(kept)


def _drop_lookalikes(classes: list[GlyphClass], thumbs: np.ndarray, tol: float = 6.0) -> list[GlyphClass]:
    """Drop a character whose 16x16 reference thumbnail is within ``tol`` (mean absolute
    grey level, of 255) of an earlier kept one: homoglyphs across scripts."""
    if not classes:
        return classes
    keep = np.ones(len(classes), dtype=bool)
    sq = (thumbs ** 2).sum(1)
    for start in range(0, len(classes), 512):
        block = thumbs[start:start + 512]
        # cheap prefilter with squared distances, exact check with L1 below
        d2 = sq[start:start + 512, None] + sq[None, :] - 2.0 * block @ thumbs.T
        for r in range(block.shape[0]):
            i = start + r
            if not keep[i]:
                continue
            close = np.nonzero(d2[r, :i] < (tol * 4) ** 2 * thumbs.shape[1])[0]
            close = close[keep[close]]
            if close.size and (np.abs(thumbs[close] - thumbs[i]).mean(1) < tol).any():
                keep[i] = False
    return [c for c, k in zip(classes, keep) if k]


def _split_by_block(classes: list[GlyphClass]) -> dict[str, tuple[GlyphClass, ...]]:
    blocks: dict[str, list[GlyphClass]] = {}
    for c in classes:
        blocks.setdefault(c.block, []).append(c)
    total = len(classes)
    splits: dict[str, list[GlyphClass]] = {s: [] for s in SPLIT_FRACTIONS}
    # largest blocks first, each to the split furthest below its target share
    for name in sorted(blocks, key=lambda b: (-len(blocks[b]), b)):
        deficit = {s: SPLIT_FRACTIONS[s] * total - len(splits[s]) for s in splits}
        target = max(splits, key=lambda s: (deficit[s], -list(splits).index(s)))
        splits[target].extend(blocks[name])
    return {s: tuple(sorted(v, key=lambda c: c.codepoint)) for s, v in splits.items()}


def _affine_coeffs(rng: np.random.Generator, canvas: int) -> tuple[float, ...]:
    """PIL AFFINE coefficients (output -> input) of a random rotation, anisotropic
    scale, shear and translation about the canvas centre."""
    theta = math.radians(rng.uniform(-15, 15))
    sx, sy = rng.uniform(0.8, 1.1, size=2)
    shear = rng.uniform(-0.2, 0.2)
    tx, ty = rng.uniform(-0.06, 0.06, size=2) * canvas
    c, s = math.cos(theta), math.sin(theta)
    # forward linear part A = R @ Shear @ Scale
    a = np.array([[c, -s], [s, c]]) @ np.array([[1.0, shear], [0.0, 1.0]]) @ np.diag([sx, sy])
    inv = np.linalg.inv(a)
    centre = np.array([canvas / 2, canvas / 2])
    offset = centre - inv @ (centre + np.array([tx, ty]))
    return (inv[0, 0], inv[0, 1], offset[0], inv[1, 0], inv[1, 1], offset[1])


def render_glyph_class(cls: GlyphClass, *, seed: int, instances: int, size: int) -> np.ndarray:
    """``instances`` images [n, size, size, 1] uint8 (ink 255 on 0) of one class; a pure
    function of (seed, codepoint)."""
    rng = np.random.default_rng([seed, cls.codepoint])
    canvas = 2 * size
    order = rng.permutation(len(cls.fonts))
    out = np.empty((instances, size, size, 1), dtype=np.uint8)
    max_stroke = max(1, round(canvas / 64))
    for i in range(instances):
        font = cls.fonts[order[i % len(order)]]
        stroke = int(rng.integers(0, max_stroke + 1))
        im = _draw(font, cls.char, canvas, stroke)
        im = im.transform((canvas, canvas), Image.Transform.AFFINE, _affine_coeffs(rng, canvas),
                          resample=Image.Resampling.BILINEAR)
        out[i, :, :, 0] = np.asarray(im.reduce(2))
    return out


def render_glyph_split(classes: tuple[GlyphClass, ...], *, seed: int, instances: int, size: int,
                       workers: int | None = None):
    """Yield the images of each class in order (threads: FreeType drawing releases the GIL
    only partly, but PIL's transform and reduce do)."""
    workers = workers or min(4, os.cpu_count() or 1)
    fn = functools.partial(render_glyph_class, seed=seed, instances=instances, size=size)
    if workers <= 1:
        yield from map(fn, classes)
        return
    with ThreadPoolExecutor(workers) as pool:
        yield from pool.map(fn, classes)
