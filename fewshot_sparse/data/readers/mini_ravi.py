"""miniImageNet as Ravi & Larochelle list it: ``{split}.csv`` (header ``filename,label``)
next to an ``images/`` folder of JPEG files.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from fewshot_sparse.data.readers.common import SplitSource, decoded_chunks, first_existing
from fewshot_sparse.errors import DataError

__all__ = ["read_csv_split", "read_mini_ravi"]


def read_mini_ravi(root: Path, split: str, image_size: int | None) -> SplitSource:
    return read_csv_split(root, split, image_size or 84)


def read_csv_split(root: Path, split: str, size: int) -> SplitSource:
    path = first_existing(root, [f"{split}.csv"], split)
    folder = root / "images"
    if not folder.is_dir():
        raise DataError(f"{root}: missing images/ folder next to {path.name} (split {split})")
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: unreadable csv ({exc})") from None
    if not rows or [c.strip().lower() for c in rows[0][:2]] != ["filename", "label"]:
        raise DataError(f"{path}: first line must be the header 'filename,label'")
    files, classes = [], []
    for lineno, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) < 2:
            raise DataError(f"{path}: line {lineno} is not 'filename,label'")
        files.append(folder / row[0].strip())
        classes.append(row[1].strip())
    if not files:
        raise DataError(f"{path}: no images listed (split {split})")
    names = sorted(set(classes))
    index = {n: i for i, n in enumerate(names)}
    labels = np.array([index[c] for c in classes], dtype=np.int64)
    for f, c in zip(files, classes):
        if not f.is_file():
            raise DataError(f"{f}: missing image (split {split}, class {c})")
    whats = lambda i: f"{files[i]} (split {split}, class {classes[i]})"  # noqa: E731
    return SplitSource(split, names, labels, (size, size, 3), decoded_chunks(files, whats, size, 3), str(path))
