"""The built-in glyph set: character classes rendered from matplotlib's bundled fonts
(``fewshot_sparse/data/glyphs.py``), no download.
"""

from __future__ import annotations

import numpy as np

from fewshot_sparse.data.glyphs import glyph_table, render_glyph_split
from fewshot_sparse.data.readers.common import SplitSource

__all__ = ["glyphs_reader"]


def glyphs_reader(seed: int, image_size: int | None, instances: int, max_classes: int | None):
    size = image_size or 32
    table = glyph_table()

    def read(split: str) -> SplitSource:
        classes = table[split][:max_classes] if max_classes else table[split]
        labels = np.repeat(np.arange(len(classes), dtype=np.int64), instances)

        def gen():
            yield from render_glyph_split(classes, seed=seed, instances=instances, size=size)
        return SplitSource(split, [c.name for c in classes], labels, (size, size, 1), gen,
                           f"glyphs (matplotlib fonts, seed {seed})",
                           extra={"codepoints": [c.codepoint for c in classes],
                                  "fonts": [list(c.fonts) for c in classes]})
    return read
