"""Any image folder tree: ``ROOT/{train,val,test}/<class>/*.jpg|png`` (``val`` may be
called ``validation`` or ``valid``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from PIL import Image

from fewshot_sparse.data.readers.common import (
    IMAGE_EXTENSIONS, SPLITS, SplitSource, decoded_chunks)
from fewshot_sparse.errors import DataError

__all__ = ["folder_splits", "read_folder"]


_SPLIT_DIRS = {"train": ("train",), "val": ("val", "validation", "valid"), "test": ("test",)}


def folder_splits(root: Path) -> tuple[str, ...]:
    """The splits present (any subset: a test/ folder alone is a cross-domain test set)."""
    found = tuple(s for s in SPLITS if any((root / d).is_dir() for d in _SPLIT_DIRS[s]))
    if not found:
        raise DataError(f"{root}: no train/, val/ or test/ folder "
                        f"(expected root/<split>/<class>/*.jpg|png)")
    return found


def read_folder(root: Path, split: str, image_size: int | None) -> SplitSource:
    folder = next((root / d for d in _SPLIT_DIRS[split] if (root / d).is_dir()), None)
    if folder is None:
        raise DataError(f"{root}: missing {split}/ folder")
    names = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names:
        raise DataError(f"{folder}: no class folders (expected {folder}/<class>/*.jpg|png)")
    files, labels = [], []
    for ci, name in enumerate(names):
        imgs = sorted(p for p in (folder / name).iterdir()
                      if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))
        if not imgs:
            raise DataError(f"{folder / name}: no images (split {split}, class {name})")
        files += imgs
        labels += [ci] * len(imgs)
    size = image_size or 84
    try:
        with Image.open(files[0]) as im:
            channels = 1 if im.mode in ("1", "L", "LA", "I", "I;16", "F") else 3
    except Exception as exc:
        raise DataError(f"{files[0]}: unreadable image ({type(exc).__name__}: {exc}) (split {split}, class {names[0]})") from None
    labels_arr = np.asarray(labels, dtype=np.int64)
    whats = lambda i: f"{files[i]} (split {split}, class {names[labels[i]]})"  # noqa: E731
    return SplitSource(split, names, labels_arr, (size, size, channels),
                       decoded_chunks(files, whats, size, channels), str(folder))
