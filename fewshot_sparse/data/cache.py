"""Reading a prepared cache (written by :func:`~fewshot_sparse.data.prepare.prepare`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import DataError
from .prepare import CACHE_FORMAT, MANIFEST

__all__ = ["PreparedSplit", "open_prepared", "read_manifest"]


def read_manifest(root: str | Path) -> dict:
    root = Path(root).expanduser()
    path = root / MANIFEST
    if not path.is_file():
        raise DataError(f"{root}: not a prepared cache (no {MANIFEST}); "
                        "run `fewshot-sparse prepare` on the dataset first")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable manifest ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != CACHE_FORMAT:
        raise DataError(f"{path}: not a {CACHE_FORMAT} manifest; prepare the dataset again")
    return manifest


class PreparedSplit:
    """One split of a prepared cache.

    ``images``: uint8 [N, H, W, C] memory map (only the pages an episode touches are
    read); ``labels``: int64 [N]; ``class_names``; ``indices_by_class[c]``: sorted flat
    indices of class c; ``n_classes``; ``image_shape`` (H, W, C); ``mean`` / ``std``
    per channel in [0, 1] units.
    """

    def __init__(self, root: str | Path, split: str):
        self.root = Path(root).expanduser()
        self.split = split
        manifest = read_manifest(self.root)
        splits = manifest.get("splits", {})
        if split not in splits:
            raise DataError(f"{self.root}: no split {split!r} (has {', '.join(splits)})")
        info = splits[split]
        self.manifest = manifest
        self.content_hash = manifest.get("content_hash")
        self._open_images()
        labels_path = self.root / split / "labels.npy"
        try:
            labels = np.load(labels_path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DataError(f"{labels_path}: unreadable ({exc})") from None
        self._init(labels, list(info["class_names"]), info.get("mean"), info.get("std"))
        if tuple(self.images.shape[1:]) != tuple(info["image_shape"]):
            raise DataError(f"{self.root / split}: images shape {self.images.shape[1:]} differs from "
                            f"the manifest's {tuple(info['image_shape'])}")

    @classmethod
    def from_arrays(cls, images: np.ndarray, labels: Sequence[int], class_names: Sequence[str] | None = None,
                    split: str = "train") -> "PreparedSplit":
        """An in-memory split (tests, synthetic data): images uint8 [N, H, W, C]."""
        self = cls.__new__(cls)
        self.root, self.split, self.manifest, self.content_hash = None, split, None, None
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4:
            raise DataError(f"split {split}: images must be uint8 [N, H, W, C], got {images.dtype} {images.shape}")
        self.images = images
        labels = np.asarray(labels, dtype=np.int64)
        n_classes = int(labels.max()) + 1 if labels.size else 0
        names = list(class_names) if class_names is not None else [str(i) for i in range(n_classes)]
        self._init(labels, names, None, None)
        return self

    def _open_images(self) -> None:
        path = self.root / self.split / "images.npy"
        try:
            self.images = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: unreadable ({exc})") from None

    def _init(self, labels: np.ndarray, class_names: list[str], mean, std) -> None:
        where = self.root / self.split if self.root is not None else f"split {self.split}"
        labels = np.asarray(labels)
        if labels.ndim != 1 or labels.shape[0] != self.images.shape[0]:
            raise DataError(f"{where}: {labels.shape} labels for {self.images.shape[0]} images")
        if not np.issubdtype(labels.dtype, np.integer):
            raise DataError(f"{where}: labels have dtype {labels.dtype}, expected int64")
        labels = labels.astype(np.int64, copy=False)
        n_classes = len(class_names)
        if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
            raise DataError(f"{where}: labels outside 0..{n_classes - 1}")
        self.labels = labels
        self.class_names = class_names
        order = np.argsort(labels, kind="stable")
        bounds = np.searchsorted(labels[order], np.arange(n_classes + 1))
        self.indices_by_class = [order[bounds[c]:bounds[c + 1]] for c in range(n_classes)]
        c = self.images.shape[3]
        self.mean = tuple(mean) if mean is not None else (0.5,) * c
        self.std = tuple(std) if std is not None else (0.25,) * c

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.images.shape[1:])

    @property
    def class_counts(self) -> np.ndarray:
        return np.array([len(i) for i in self.indices_by_class], dtype=np.int64)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __repr__(self) -> str:
        return (f"PreparedSplit({self.split!r}, {len(self)} images, {self.n_classes} classes, "
                f"{self.image_shape}, root={str(self.root) if self.root else None!r})")

    # a memory map must not travel to DataLoader workers by value: reopen it there
    def __getstate__(self):
        state = self.__dict__.copy()
        if self.root is not None:
            state["images"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        if self.images is None:
            self._open_images()


def open_prepared(root: str | Path) -> dict[str, PreparedSplit]:
    """All splits of a prepared cache, by name (train / val / test)."""
    manifest = read_manifest(root)
    return {s: PreparedSplit(root, s) for s in manifest["splits"]}
