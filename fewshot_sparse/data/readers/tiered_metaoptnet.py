"""tieredImageNet as MetaOptNet stores it: ``{split}_images.npz`` (key ``images``,
[N, 84, 84, 3] uint8), streamed out of the zip member, with ``{split}_labels.pkl``.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from fewshot_sparse.data.readers import common
from fewshot_sparse.data.readers.common import (
    SplitSource, check_size, first_existing, resize_chunk)
from fewshot_sparse.data.readers.tiered_labels import named_classes, tiered_labels
from fewshot_sparse.errors import DataError

__all__ = ["read_tiered_metaoptnet"]


def read_tiered_metaoptnet(root: Path, split: str, image_size: int | None) -> SplitSource:
    raw, names, lpath = tiered_labels(root, split)
    path = first_existing(root, [f"{split}_images.npz"], split)
    try:
        zf = zipfile.ZipFile(path)
        members = zf.namelist()
    except (OSError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable .npz ({exc})") from None
    if "images.npy" not in members:
        raise DataError(f"{path}: missing key 'images' (has {[m[:-4] for m in members]})")
    with zf.open("images.npy") as f:
        shape, dtype = _npy_header(f, path)
    zf.close()
    if dtype != np.uint8:
        raise DataError(f"{path}: 'images' has dtype {dtype}, expected uint8")
    if len(shape) != 4 or shape[3] != 3 or shape[1] != shape[2]:
        raise DataError(f"{path}: 'images' has shape {shape}, expected (N, H, H, 3)")
    check_size(shape[1], path, "images", image_size)
    if shape[0] != raw.shape[0]:
        raise DataError(f"{path}: holds {shape[0]} images but {lpath.name} has {raw.shape[0]} labels")
    labels, cls = named_classes(raw, names, lpath, split)

    def gen():  # stream rows out of the (possibly compressed) zip member
        row, chunk = int(np.prod(shape[1:])), common.CHUNK
        with zipfile.ZipFile(path) as z, z.open("images.npy") as f:
            _npy_header(f, path)
            for s in range(0, shape[0], chunk):
                n = min(chunk, shape[0] - s)
                buf = f.read(n * row)
                if len(buf) != n * row:
                    raise DataError(f"{path}: 'images' is truncated at image {s + len(buf) // row}")
                yield resize_chunk(np.frombuffer(buf, np.uint8).reshape((n,) + tuple(shape[1:])), image_size)

    size = image_size or shape[1]
    return SplitSource(split, cls, labels, (size, size, 3), gen, str(path))


def _npy_header(f, path: Path):
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            shape, fortran, dtype = np.lib.format._read_array_header(f, version)
    except Exception as exc:
        raise DataError(f"{path}: 'images' is not a readable .npy member ({exc})") from None
    if dtype.hasobject:
        raise DataError(f"{path}: 'images' holds Python objects, expected uint8")
    if fortran and len(shape) > 1:
        raise DataError(f"{path}: 'images' is stored in Fortran order; save it C-ordered")
    return tuple(shape), dtype
