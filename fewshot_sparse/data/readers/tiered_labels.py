"""The label file both tieredImageNet formats share: ``{split}_labels.pkl``, a dict with
``label_specific`` (or ``labels``) and optionally ``label_specific_str`` (class names).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fewshot_sparse.data.readers.common import first_existing, int_labels, remap
from fewshot_sparse.data.safe_pickle import safe_load
from fewshot_sparse.errors import DataError

__all__ = ["named_classes", "tiered_labels"]


def tiered_labels(root: Path, split: str) -> tuple[np.ndarray, list[str] | None, Path]:
    path = first_existing(root, [f"{split}_labels.pkl"], split)
    d = safe_load(path)
    if not isinstance(d, dict):
        raise DataError(f"{path}: expected a dict with key 'label_specific' or 'labels', found {type(d).__name__}")
    key = "label_specific" if "label_specific" in d else "labels" if "labels" in d else None
    if key is None:
        raise DataError(f"{path}: missing key 'label_specific' (or 'labels'); has {sorted(map(str, d))}")
    names = d.get("label_specific_str")
    names = [str(n) for n in names] if isinstance(names, (list, tuple, np.ndarray)) else None
    try:
        raw = np.asarray(d[key])
    except Exception:
        raise DataError(f"{path}: {key!r} is not a list of integers") from None
    return int_labels(raw, path, key, raw.shape[0] if raw.ndim == 1 else -1), names, path


def named_classes(raw: np.ndarray, names: list[str] | None, path: Path, split: str):
    labels, values = remap(raw)
    if names is not None:
        if values.size and values.max() >= len(names):
            raise DataError(f"{path}: label {int(values.max())} has no name in label_specific_str "
                        f"({len(names)} names, split {split})")
        cls = [names[int(v)] for v in values]
    else:
        cls = [f"{split}/{int(v)}" for v in values]  # bare ints: no identity across splits
    return labels, cls
