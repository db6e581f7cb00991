"""Small image folders written by the tests: one subfolder per class, PNG files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def pattern(cls: int, inst: int, size: int, channels: int = 3) -> np.ndarray:
    """A class-dependent stripe pattern with instance noise, uint8 [size, size, C]."""
    rng = np.random.default_rng(1000 * cls + inst)
    yy, xx = np.mgrid[0:size, 0:size]
    base = 127 + 100 * np.sin((xx * (cls + 1) + yy * (cls % 3)) * np.pi / size)
    img = np.stack([base, base[::-1], base.T], -1)[..., :channels]
    return np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)


def write_classes(folder: Path, n_classes: int, per_class, size: int = 24,
                  channels: int = 3, offset: int = 0) -> Path:
    """``folder/class{c}/{i}.png``; ``per_class`` an int or one count per class."""
    counts = [per_class] * n_classes if isinstance(per_class, int) else list(per_class)
    for c, n in enumerate(counts):
        d = folder / f"class{c}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = pattern(c + offset, i, size, channels)
            Image.fromarray(img[..., 0] if channels == 1 else img).save(d / f"{i}.png")
    return folder
