"""miniImageNet as learn2learn / Ren et al. cache it: ``mini-imagenet-cache-{split}.pkl``,
a dict of ``image_data`` [N, 84, 84, 3] uint8 and ``class_dict`` (class -> rows).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fewshot_sparse.data.readers.common import (
    SplitSource, array_chunks, check_images, first_existing, require_dict)
from fewshot_sparse.data.safe_pickle import safe_load
from fewshot_sparse.errors import DataError

__all__ = ["read_mini_learn2learn"]


_L2L_FILES = {"train": ["mini-imagenet-cache-train.pkl"],
              "val": ["mini-imagenet-cache-validation.pkl", "mini-imagenet-cache-val.pkl"],
              "test": ["mini-imagenet-cache-test.pkl"]}


def read_mini_learn2learn(root: Path, split: str, image_size: int | None) -> SplitSource:
    path = first_existing(root, _L2L_FILES[split], split)
    d = require_dict(safe_load(path), path, ("image_data", "class_dict"))
    images = check_images(d["image_data"], path, "image_data", image_size)
    class_dict = d["class_dict"]
    if not isinstance(class_dict, dict) or not class_dict:
        raise DataError(f"{path}: 'class_dict' must be a non-empty dict of class -> row indices")
    n = images.shape[0]
    names = sorted(str(k) for k in class_dict)
    by_name = {str(k): v for k, v in class_dict.items()}
    labels = np.full(n, -1, dtype=np.int64)
    for ci, name in enumerate(names):
        try:
            rows = np.asarray(by_name[name], dtype=np.int64).reshape(-1)
        except (TypeError, ValueError):
            raise DataError(f"{path}: class_dict[{name!r}] is not a list of row indices (split {split})") from None
        if rows.size and (rows.min() < 0 or rows.max() >= n):
            bad = rows[(rows < 0) | (rows >= n)][0]
            raise DataError(f"{path}: class_dict[{name!r}] names row {bad}, image_data has {n} rows (split {split})")
        if (labels[rows] != -1).any():
            raise DataError(f"{path}: class_dict[{name!r}] shares rows with another class (split {split})")
        labels[rows] = ci
    if (labels < 0).any():
        raise DataError(f"{path}: {(labels < 0).sum()} rows of image_data belong to no class (split {split})")
    return SplitSource(split, names, labels, (image_size or 84,) * 2 + (3,), array_chunks(images, image_size), str(path))
