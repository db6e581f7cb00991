"""What every reader shares: the :class:`SplitSource` it delivers, the split names,
the published sizes, input checks whose errors name the file, and chunked decoding.
"""

from __future__ import annotations

import io
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
from PIL import Image

from fewshot_sparse.data.bit_depth import to_eight_bit
from fewshot_sparse.errors import DataError

__all__ = [
    "CHUNK", "IMAGE_EXTENSIONS", "PUBLISHED_COUNTS", "Reader", "SPLITS", "SplitSource",
    "array_chunks", "bytes_io", "check_images", "check_size", "decode", "decoded_chunks",
    "first_existing", "int_labels", "remap", "require_dict", "resize_chunk"
]


SPLITS = ("train", "val", "test")
CHUNK = 1024  # images per chunk streamed to the writer
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")

# (classes, images) per split as published.
PUBLISHED_COUNTS = {
    "miniimagenet": {"train": (64, 38400), "val": (16, 9600), "test": (20, 12000)},
    "tieredimagenet": {"train": (351, 448695), "val": (97, 124261), "test": (160, 206209)},
}


@dataclass
class SplitSource:
    """One split as a reader delivers it."""

    split: str
    class_names: list[str]
    labels: np.ndarray              # int64 [N] in 0..len(class_names)-1
    image_shape: tuple[int, int, int]
    chunks: Callable[[], Iterator[np.ndarray]]  # consecutive uint8 [n, H, W, C], N rows in all
    origin: str                     # file or folder, for messages
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class Reader:
    dataset: str
    fmt: str
    splits: tuple[str, ...]
    read: Callable[[str], SplitSource]
    root: Path | None


def first_existing(root: Path, names: Sequence[str], split: str) -> Path:
    for n in names:
        if (root / n).is_file():
            return root / n
    alt = " or ".join(names)
    raise DataError(f"{root}: missing {alt} (split {split})")


def require_dict(obj, path: Path, keys: Sequence[str]) -> dict:
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a dict with keys {list(keys)}, found {type(obj).__name__}")
    missing = [k for k in keys if k not in obj]
    if missing:
        raise DataError(f"{path}: missing key {missing[0]!r} (has {sorted(map(str, obj))})")
    return obj


def check_images(arr, path: Path, key: str, image_size: int | None, channels: int = 3) -> np.ndarray:
    if not isinstance(arr, np.ndarray):
        raise DataError(f"{path}: {key!r} is a {type(arr).__name__}, expected a uint8 numpy array")
    if arr.dtype != np.uint8:
        raise DataError(f"{path}: {key!r} has dtype {arr.dtype}, expected uint8")
    if arr.ndim != 4 or arr.shape[3] != channels or arr.shape[1] != arr.shape[2]:
        raise DataError(f"{path}: {key!r} has shape {arr.shape}, expected (N, H, H, {channels})")
    check_size(arr.shape[1], path, key, image_size)
    return arr


def check_size(h: int, path: Path, key: str, image_size: int | None) -> None:
    if image_size is None and h != 84:
        raise DataError(f"{path}: {key!r} holds {h}x{h} images, expected 84x84 "
                    "(pass image_size to resize)")


def int_labels(values, path: Path, key: str, n: int) -> np.ndarray:
    try:
        arr = np.asarray(values)
    except Exception:
        raise DataError(f"{path}: {key!r} is not a list of integers") from None
    if arr.ndim != 1 or arr.shape[0] != n:
        raise DataError(f"{path}: {key!r} has shape {arr.shape}, expected ({n},) to match the images")
    if n and not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise DataError(f"{path}: {key!r} has dtype {arr.dtype}, expected integers")
    arr = arr.astype(np.int64)
    if n and arr.min() < 0:
        raise DataError(f"{path}: {key!r} holds negative label {int(arr.min())}")
    return arr


def remap(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Original labels -> 0..C-1 in sorted order; returns (labels, original values)."""
    values, labels = np.unique(raw, return_inverse=True)
    return labels.astype(np.int64).reshape(-1), values


def array_chunks(arr: np.ndarray, image_size: int | None) -> Callable[[], Iterator[np.ndarray]]:
    def gen():
        for s in range(0, arr.shape[0], CHUNK):
            chunk = np.ascontiguousarray(arr[s:s + CHUNK])
            yield resize_chunk(chunk, image_size)
    return gen


def resize_chunk(chunk: np.ndarray, image_size: int | None) -> np.ndarray:
    if image_size is None or chunk.shape[1] == image_size:
        return chunk
    mode = "L" if chunk.shape[3] == 1 else "RGB"
    out = np.empty((chunk.shape[0], image_size, image_size, chunk.shape[3]), dtype=np.uint8)
    for i, img in enumerate(chunk):
        im = Image.fromarray(img[..., 0] if mode == "L" else img, mode)
        out[i] = np.asarray(im.resize((image_size, image_size), Image.Resampling.BILINEAR)).reshape(out.shape[1:])
    return out


def bytes_io(data) -> io.BytesIO:
    if isinstance(data, np.ndarray):
        data = np.ascontiguousarray(data)
    return io.BytesIO(memoryview(data).cast("B"))


def decode(data, size: int, channels: int, what: str) -> np.ndarray:
    """Decode one encoded image (path or bytes) to uint8 [size, size, channels]."""
    try:
        with Image.open(data if isinstance(data, (str, Path)) else bytes_io(data)) as src:
            if src.format == "JPEG":
                src.draft("RGB" if channels == 3 else "L", (size, size))
            im = to_eight_bit(src).convert("RGB" if channels == 3 else "L")
        if im.size != (size, size):
            im = im.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
        return np.asarray(im).reshape(size, size, channels)
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{what}: unreadable image ({type(exc).__name__}: {exc})") from None


def decoded_chunks(items: Sequence, whats: Callable[[int], str], size: int, channels: int,
                    workers: int | None = None) -> Callable[[], Iterator[np.ndarray]]:
    workers = workers or min(8, os.cpu_count() or 1)

    def gen():
        with ThreadPoolExecutor(workers) as pool:
            for s in range(0, len(items), CHUNK):
                idx = range(s, min(s + CHUNK, len(items)))
                out = np.empty((len(idx), size, size, channels), dtype=np.uint8)
                for j, img in enumerate(pool.map(lambda i: decode(items[i], size, channels, whats(i)), idx)):
                    out[j] = img
                yield out
    return gen
