"""Readers for the published on-disk formats of miniImageNet and tieredImageNet, any
image folder tree, and the built-in glyph set: one module per source format; this one
holds the registry and the format detection.

A reader turns one split of one format into a :class:`SplitSource`: class names,
labels (known up front) and a stream of uint8 image chunks [n, H, W, C], so that
:func:`~fewshot_sparse.data.prepare.prepare` can write any split into a memory map
without holding it twice. Every problem is a one-line ``DataError`` naming the file
(and the split / class where there is one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from fewshot_sparse.data.readers.common import PUBLISHED_COUNTS, SPLITS, Reader, SplitSource
from fewshot_sparse.data.readers.folder import folder_splits, read_folder
from fewshot_sparse.data.readers.glyph_set import glyphs_reader
from fewshot_sparse.data.readers.mini_learn2learn import read_mini_learn2learn
from fewshot_sparse.data.readers.mini_metaoptnet import MOPT_FILES, read_mini_metaoptnet
from fewshot_sparse.data.readers.mini_ravi import read_mini_ravi
from fewshot_sparse.data.readers.tiered_metaoptnet import read_tiered_metaoptnet
from fewshot_sparse.data.readers.tiered_ren import read_tiered_ren
from fewshot_sparse.errors import DataError

__all__ = [
    "SplitSource", "Reader", "READERS", "FORMAT_ALIASES", "resolve_reader", "SPLITS",
    "PUBLISHED_COUNTS", "detect_format", "DATASETS"
]


READERS: dict[tuple[str, str], Callable[[Path, str, int | None], SplitSource]] = {
    ("miniimagenet", "learn2learn"): read_mini_learn2learn,
    ("miniimagenet", "metaoptnet"): read_mini_metaoptnet,
    ("miniimagenet", "ravi"): read_mini_ravi,
    ("tieredimagenet", "ren"): read_tiered_ren,
    ("tieredimagenet", "metaoptnet"): read_tiered_metaoptnet,
    ("folder", "folder"): read_folder,
}


FORMAT_ALIASES = {
    "miniimagenet": {"l2l": "learn2learn", "ren": "learn2learn", "torchmeta": "learn2learn",
                     "pkl": "learn2learn", "gidaris": "metaoptnet", "pickle": "metaoptnet",
                     "csv": "ravi", "ravi-larochelle": "ravi"},
    "tieredimagenet": {"learn2learn": "ren", "l2l": "ren", "png": "ren", "npz": "metaoptnet"},
    "folder": {},
}


# the file whose presence identifies each format (checked in this order)
_SIGNATURES = {
    "miniimagenet": [("learn2learn", "mini-imagenet-cache-train.pkl"),
                     ("metaoptnet", MOPT_FILES["train"]),
                     ("ravi", "train.csv")],
    "tieredimagenet": [("ren", "train_images_png.pkl"), ("metaoptnet", "train_images.npz")],
}


DATASETS = ("miniimagenet", "tieredimagenet", "folder", "glyphs")


def detect_format(dataset: str, root: Path) -> str:
    if dataset == "folder":
        return "folder"
    for fmt, name in _SIGNATURES[dataset]:
        if (root / name).is_file():
            return fmt
    looked = ", ".join(name for _, name in _SIGNATURES[dataset])
    raise DataError(f"{root}: no {dataset} files found (looked for {looked})")


def resolve_reader(dataset: str, root, fmt: str | None, *, seed: int = 0, image_size: int | None = None,
                   glyph_instances: int = 20, glyph_max_classes: int | None = None) -> Reader:
    key = dataset.lower().replace("-", "").replace("_", "")
    if key not in DATASETS:
        raise DataError(f"unknown dataset {dataset!r} (choose from {', '.join(DATASETS)})")
    if key == "glyphs":
        return Reader("glyphs", "glyphs", SPLITS,
                      glyphs_reader(seed, image_size, glyph_instances, glyph_max_classes), None)
    if root is None:
        raise DataError(f"dataset {key} needs a root folder")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: folder not found")
    if fmt is None:
        fmt = detect_format(key, root)
    else:
        fmt = FORMAT_ALIASES.get(key, {}).get(fmt.lower(), fmt.lower())
        if (key, fmt) not in READERS:
            known = sorted(f for d, f in READERS if d == key)
            raise DataError(f"unknown {key} format {fmt!r} (choose from {', '.join(known)})")
    fn = READERS[(key, fmt)]
    splits = folder_splits(root) if key == "folder" else SPLITS
    return Reader(key, fmt, splits, lambda split: fn(root, split, image_size), root)
