"""The built-in glyph dataset."""

from __future__ import annotations

import unicodedata

import numpy as np

from fewshot_sparse.data import open_prepared, prepare, read_manifest
from fewshot_sparse.data.glyphs import MIN_FONTS, glyph_fonts, glyph_table, render_glyph_class


def test_class_table_default_size_and_splits():
    table = glyph_table()
    sizes = {s: len(v) for s, v in table.items()}
    assert sum(sizes.values()) >= 1000, sizes
    assert sizes["train"] > sizes["test"] > 0 and sizes["val"] > 0
    cps = {s: {c.codepoint for c in v} for s, v in table.items()}
    assert not (cps["train"] & cps["val"] or cps["train"] & cps["test"] or cps["val"] & cps["test"])
    blocks = {s: {c.block for c in v} for s, v in table.items()}
    assert not (blocks["train"] & blocks["test"] or blocks["train"] & blocks["val"])  # split by block
    fonts = glyph_fonts()
    assert not any("LastResort" in f for f in fonts)
    for cls in table["train"][:50]:
        assert len(cls.fonts) >= MIN_FONTS and all(cls.codepoint in fonts[f] for f in cls.fonts)
        assert unicodedata.category(cls.char)[0] in "LNSP"


def test_small_glyph_set_builds_deterministically(tmp_path):
    kw = dict(glyph_max_classes=6, glyph_instances=5, progress=False)
    a = prepare("glyphs", None, tmp_path / "a", seed=1, **kw)
    b = prepare("glyphs", None, tmp_path / "b", seed=1, **kw)
    c = prepare("glyphs", None, tmp_path / "c", seed=2, **kw)
    ma, mb, mc = read_manifest(a), read_manifest(b), read_manifest(c)
    assert ma["content_hash"] == mb["content_hash"] != mc["content_hash"]
    splits = open_prepared(a)
    for name, s in splits.items():
        assert isinstance(s.images, np.memmap)
        assert s.image_shape == (32, 32, 1) and len(s) == 30 and s.n_classes == 6
        assert s.class_counts.tolist() == [5] * 6
        ink = s.images.reshape(len(s), -1)
        assert (ink.max(1) >= 200).all()  # every image has ink
        assert (np.median(ink, axis=1) == 0).all()  # ink on a black background
    assert ma["splits"]["train"]["class_names"][0].startswith("U+")
    assert ma["source_format"] == "glyphs" and len(ma["splits"]["train"]["fonts"][0]) >= MIN_FONTS


def test_instances_vary_and_sizes_are_configurable():
    cls = glyph_table()["test"][0]
    imgs = render_glyph_class(cls, seed=0, instances=8, size=32)
    assert imgs.shape == (8, 32, 32, 1) and imgs.dtype == np.uint8
    assert len({im.tobytes() for im in imgs}) == 8  # every instance differs
    assert np.array_equal(imgs, render_glyph_class(cls, seed=0, instances=8, size=32))
    assert render_glyph_class(cls, seed=0, instances=2, size=20).shape == (2, 20, 20, 1)


def test_missing_glyphs_and_placeholder_fonts_rejected():
    from fewshot_sparse.data.glyphs import _valid

    assert _valid("DejaVuSans.ttf", "\U0010fffd") is None  # draws the .notdef box
    assert _valid("DejaVuSans.ttf", " ") is None  # blank
    assert _valid("DejaVuSans.ttf", "A") is not None
    assert all(not f.startswith(("LastResort", "cmex10", "cmsy10")) for f in glyph_fonts())
    assert all(chr(cp).isascii() for cp in glyph_fonts().get("cmr10.ttf", ()))
