"""Images of more than 8 bits per channel, scaled to the cache's uint8 range.

Pillow opens a 16-bit grayscale PNG in a 16- or 32-bit integer mode ("I;16", "I");
converting that to "L" clips every value above 255 (a mid-grey 16-bit image became
almost white). Here values are scaled instead: ``v8 = round(v16 * 255 / 65535)``.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def to_eight_bit(im: Image.Image) -> Image.Image:
    """``im`` itself when it is 8-bit already, else an "L" image of its values scaled
    from the 16-bit range (a 32-bit "I" image whose values all fit in 8 bits is kept
    as they are)."""
    if im.mode not in _SIXTEEN_BIT:
        return im
    v = np.asarray(im).astype(np.int64)
    if im.mode == "I" and im.format != "PNG" and v.size and 0 <= v.min() and v.max() <= 255:
        return Image.fromarray(v.astype(np.uint8), "L")
    v = np.clip(v, 0, 65535)
    return Image.fromarray(((v * 255 + 32767) // 65535).astype(np.uint8), "L")
