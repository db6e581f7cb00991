"""miniImageNet as MetaOptNet / Gidaris et al. pickle it:
``miniImageNet_category_split_{train_phase_train,val,test}.pickle``, a dict of ``data``
[N, 84, 84, 3] uint8 and ``labels``, class names in ``catname2label`` / ``label2catname``.
"""

from __future__ import annotations

from pathlib import Path

from fewshot_sparse.data.readers.common import (
    SplitSource, array_chunks, check_images, first_existing, int_labels, remap,
    require_dict)
from fewshot_sparse.data.safe_pickle import safe_load

__all__ = ["MOPT_FILES", "read_mini_metaoptnet"]


MOPT_FILES = {"train": "miniImageNet_category_split_train_phase_train.pickle",
               "val": "miniImageNet_category_split_val.pickle",
               "test": "miniImageNet_category_split_test.pickle"}


def read_mini_metaoptnet(root: Path, split: str, image_size: int | None) -> SplitSource:
    path = first_existing(root, [MOPT_FILES[split]], split)
    d = require_dict(safe_load(path), path, ("data", "labels"))
    images = check_images(d["data"], path, "data", image_size)
    raw = int_labels(d["labels"], path, "labels", images.shape[0])
    labels, values = remap(raw)
    names_of: dict[int, str] = {}
    if isinstance(d.get("catname2label"), dict):
        names_of.update({int(v): str(k) for k, v in d["catname2label"].items()})
    l2c = d.get("label2catname")
    if isinstance(l2c, dict):
        names_of.update({int(k): str(v) for k, v in l2c.items()})
    elif isinstance(l2c, (list, tuple)):
        names_of.update({i: str(v) for i, v in enumerate(l2c)})
    names = [names_of.get(int(v), f"{split}/{int(v)}") for v in values]  # unnamed: per split
    return SplitSource(split, names, labels, (image_size or 84,) * 2 + (3,), array_chunks(images, image_size), str(path))
