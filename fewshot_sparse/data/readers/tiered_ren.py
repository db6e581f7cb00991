"""tieredImageNet as Ren et al. / learn2learn store it: ``{split}_images_png.pkl``, a list
of PNG-encoded images, with ``{split}_labels.pkl``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from PIL import Image

from fewshot_sparse.data.readers.common import (
    SplitSource, bytes_io, check_size, decoded_chunks, first_existing)
from fewshot_sparse.data.readers.tiered_labels import named_classes, tiered_labels
from fewshot_sparse.data.safe_pickle import safe_load
from fewshot_sparse.errors import DataError

__all__ = ["read_tiered_ren"]


def read_tiered_ren(root: Path, split: str, image_size: int | None) -> SplitSource:
    raw, names, lpath = tiered_labels(root, split)
    path = first_existing(root, [f"{split}_images_png.pkl"], split)
    items = safe_load(path)
    if isinstance(items, np.ndarray) and items.dtype == object:
        items = list(items)
    if not isinstance(items, (list, tuple)):
        raise DataError(f"{path}: expected a list of PNG-encoded byte arrays, found {type(items).__name__}")
    if len(items) != raw.shape[0]:
        raise DataError(f"{path}: holds {len(items)} images but {lpath.name} has {raw.shape[0]} labels")
    for i, it in enumerate(items):
        if not isinstance(it, (bytes, bytearray, np.ndarray)):
            raise DataError(f"{path}: image {i} is a {type(it).__name__}, expected PNG bytes (split {split})")
    # items stay as unpickled (no second copy of the split); each is wrapped when decoded
    labels, cls = named_classes(raw, names, lpath, split)
    size = image_size or 84
    whats = lambda i: f"{path} image {i} (split {split}, class {cls[labels[i]]})"  # noqa: E731
    if image_size is None and items:  # check the published size on the first image
        check_size(_png_size(items[0], whats(0)), path, "images", None)
    return SplitSource(split, cls, labels, (size, size, 3), decoded_chunks(items, whats, size, 3), str(path))


def _png_size(data: bytes, what: str) -> int:
    try:
        with Image.open(bytes_io(data)) as im:
            w, h = im.size
    except Exception as exc:
        raise DataError(f"{what}: unreadable image ({type(exc).__name__}: {exc})") from None
    return w if w == h else max(w, h)
