"""Readers for the published on-disk formats of miniImageNet and tieredImageNet, any
image folder tree, and the built-in glyph set.

A reader turns one split of one format into a :class:`SplitSource`: class names,
labels (known up front) and a stream of uint8 image chunks [n, H, W, C], so that
:func:`~fewshot_sparse.data.prepare.prepare` can write any split into a memory map
without holding it twice. Every problem is a one-line ``DataError`` naming the file
(and the split / class where there is one).
"""

from __future__ import annotations

import csv
import io
import os
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
from PIL import Image

from ..errors import DataError
from .safe_pickle import safe_load

__all__ = ["SplitSource", "Reader", "READERS", "FORMAT_ALIASES", "resolve_reader", "SPLITS",
           "PUBLISHED_COUNTS"]

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


# ---------------------------------------------------------------- helpers

def _fail(msg: str) -> DataError:
    return DataError(msg)


def _first_existing(root: Path, names: Sequence[str], split: str) -> Path:
    for n in names:
        if (root / n).is_file():
            return root / n
    alt = " or ".join(names)
    raise _fail(f"{root}: missing {alt} (split {split})")


def _require_dict(obj, path: Path, keys: Sequence[str]) -> dict:
    if not isinstance(obj, dict):
        raise _fail(f"{path}: expected a dict with keys {list(keys)}, found {type(obj).__name__}")
    missing = [k for k in keys if k not in obj]
    if missing:
        raise _fail(f"{path}: missing key {missing[0]!r} (has {sorted(map(str, obj))})")
    return obj


def _check_images(arr, path: Path, key: str, image_size: int | None, channels: int = 3) -> np.ndarray:
    if not isinstance(arr, np.ndarray):
        raise _fail(f"{path}: {key!r} is a {type(arr).__name__}, expected a uint8 numpy array")
    if arr.dtype != np.uint8:
        raise _fail(f"{path}: {key!r} has dtype {arr.dtype}, expected uint8")
    if arr.ndim != 4 or arr.shape[3] != channels or arr.shape[1] != arr.shape[2]:
        raise _fail(f"{path}: {key!r} has shape {arr.shape}, expected (N, H, H, {channels})")
    _check_size(arr.shape[1], path, key, image_size)
    return arr


def _check_size(h: int, path: Path, key: str, image_size: int | None) -> None:
    if image_size is None and h != 84:
        raise _fail(f"{path}: {key!r} holds {h}x{h} images, expected 84x84 "
                    "(pass image_size to resize)")


def _int_labels(values, path: Path, key: str, n: int) -> np.ndarray:
    try:
        arr = np.asarray(values)
    except Exception:
        raise _fail(f"{path}: {key!r} is not a list of integers") from None
    if arr.ndim != 1 or arr.shape[0] != n:
        raise _fail(f"{path}: {key!r} has shape {arr.shape}, expected ({n},) to match the images")
    if n and not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise _fail(f"{path}: {key!r} has dtype {arr.dtype}, expected integers")
    arr = arr.astype(np.int64)
    if n and arr.min() < 0:
        raise _fail(f"{path}: {key!r} holds negative label {int(arr.min())}")
    return arr


def _remap(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Original labels -> 0..C-1 in sorted order; returns (labels, original values)."""
    values, labels = np.unique(raw, return_inverse=True)
    return labels.astype(np.int64).reshape(-1), values


def _array_chunks(arr: np.ndarray, image_size: int | None) -> Callable[[], Iterator[np.ndarray]]:
    def gen():
        for s in range(0, arr.shape[0], CHUNK):
            chunk = np.ascontiguousarray(arr[s:s + CHUNK])
            yield _resize_chunk(chunk, image_size)
    return gen


def _resize_chunk(chunk: np.ndarray, image_size: int | None) -> np.ndarray:
    if image_size is None or chunk.shape[1] == image_size:
        return chunk
    mode = "L" if chunk.shape[3] == 1 else "RGB"
    out = np.empty((chunk.shape[0], image_size, image_size, chunk.shape[3]), dtype=np.uint8)
    for i, img in enumerate(chunk):
        im = Image.fromarray(img[..., 0] if mode == "L" else img, mode)
        out[i] = np.asarray(im.resize((image_size, image_size), Image.Resampling.BILINEAR)).reshape(out.shape[1:])
    return out


def _bytes_io(data) -> io.BytesIO:
    if isinstance(data, np.ndarray):
        data = np.ascontiguousarray(data)
    return io.BytesIO(memoryview(data).cast("B"))


def _decode(data, size: int, channels: int, what: str) -> np.ndarray:
    """Decode one encoded image (path or bytes) to uint8 [size, size, channels]."""
    try:
        im = Image.open(data if isinstance(data, (str, Path)) else _bytes_io(data))
        if im.format == "JPEG":
            im.draft("RGB" if channels == 3 else "L", (size, size))
        im = im.convert("RGB" if channels == 3 else "L")
        if im.size != (size, size):
            im = im.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
        return np.asarray(im).reshape(size, size, channels)
    except DataError:
        raise
    except Exception as exc:
        raise _fail(f"{what}: unreadable image ({type(exc).__name__}: {exc})") from None


def _decoded_chunks(items: Sequence, whats: Callable[[int], str], size: int, channels: int,
                    workers: int | None = None) -> Callable[[], Iterator[np.ndarray]]:
    workers = workers or min(8, os.cpu_count() or 1)

    def gen():
        with ThreadPoolExecutor(workers) as pool:
            for s in range(0, len(items), CHUNK):
                idx = range(s, min(s + CHUNK, len(items)))
                out = np.empty((len(idx), size, size, channels), dtype=np.uint8)
                for j, img in enumerate(pool.map(lambda i: _decode(items[i], size, channels, whats(i)), idx)):
                    out[j] = img
                yield out
    return gen


# ---------------------------------------------------------------- miniImageNet

_L2L_FILES = {"train": ["mini-imagenet-cache-train.pkl"],
              "val": ["mini-imagenet-cache-validation.pkl", "mini-imagenet-cache-val.pkl"],
              "test": ["mini-imagenet-cache-test.pkl"]}


def _mini_learn2learn(root: Path, split: str, image_size: int | None) -> SplitSource:
    path = _first_existing(root, _L2L_FILES[split], split)
    d = _require_dict(safe_load(path), path, ("image_data", "class_dict"))
    images = _check_images(d["image_data"], path, "image_data", image_size)
    class_dict = d["class_dict"]
    if not isinstance(class_dict, dict) or not class_dict:
        raise _fail(f"{path}: 'class_dict' must be a non-empty dict of class -> row indices")
    n = images.shape[0]
    names = sorted(str(k) for k in class_dict)
    by_name = {str(k): v for k, v in class_dict.items()}
    labels = np.full(n, -1, dtype=np.int64)
    for ci, name in enumerate(names):
        try:
            rows = np.asarray(by_name[name], dtype=np.int64).reshape(-1)
        except (TypeError, ValueError):
            raise _fail(f"{path}: class_dict[{name!r}] is not a list of row indices (split {split})") from None
        if rows.size and (rows.min() < 0 or rows.max() >= n):
            bad = rows[(rows < 0) | (rows >= n)][0]
            raise _fail(f"{path}: class_dict[{name!r}] names row {bad}, image_data has {n} rows (split {split})")
        if (labels[rows] != -1).any():
            raise _fail(f"{path}: class_dict[{name!r}] shares rows with another class (split {split})")
        labels[rows] = ci
    if (labels < 0).any():
        raise _fail(f"{path}: {(labels < 0).sum()} rows of image_data belong to no class (split {split})")
    return SplitSource(split, names, labels, (image_size or 84,) * 2 + (3,), _array_chunks(images, image_size), str(path))


_MOPT_FILES = {"train": "miniImageNet_category_split_train_phase_train.pickle",
               "val": "miniImageNet_category_split_val.pickle",
               "test": "miniImageNet_category_split_test.pickle"}


def _mini_metaoptnet(root: Path, split: str, image_size: int | None) -> SplitSource:
    path = _first_existing(root, [_MOPT_FILES[split]], split)
    d = _require_dict(safe_load(path), path, ("data", "labels"))
    images = _check_images(d["data"], path, "data", image_size)
    raw = _int_labels(d["labels"], path, "labels", images.shape[0])
    labels, values = _remap(raw)
    names_of: dict[int, str] = {}
    if isinstance(d.get("catname2label"), dict):
        names_of.update({int(v): str(k) for k, v in d["catname2label"].items()})
    l2c = d.get("label2catname")
    if isinstance(l2c, dict):
        names_of.update({int(k): str(v) for k, v in l2c.items()})
    elif isinstance(l2c, (list, tuple)):
        names_of.update({i: str(v) for i, v in enumerate(l2c)})
    names = [names_of.get(int(v), f"{split}/{int(v)}") for v in values]  # unnamed: per split
    return SplitSource(split, names, labels, (image_size or 84,) * 2 + (3,), _array_chunks(images, image_size), str(path))


def _mini_ravi(root: Path, split: str, image_size: int | None) -> SplitSource:
    return _csv_split(root, split, image_size or 84)


def _csv_split(root: Path, split: str, size: int) -> SplitSource:
    path = _first_existing(root, [f"{split}.csv"], split)
    folder = root / "images"
    if not folder.is_dir():
        raise _fail(f"{root}: missing images/ folder next to {path.name} (split {split})")
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise _fail(f"{path}: unreadable csv ({exc})") from None
    if not rows or [c.strip().lower() for c in rows[0][:2]] != ["filename", "label"]:
        raise _fail(f"{path}: first line must be the header 'filename,label'")
    files, classes = [], []
    for lineno, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) < 2:
            raise _fail(f"{path}: line {lineno} is not 'filename,label'")
        files.append(folder / row[0].strip())
        classes.append(row[1].strip())
    if not files:
        raise _fail(f"{path}: no images listed (split {split})")
    names = sorted(set(classes))
    index = {n: i for i, n in enumerate(names)}
    labels = np.array([index[c] for c in classes], dtype=np.int64)
    for f, c in zip(files, classes):
        if not f.is_file():
            raise _fail(f"{f}: missing image (split {split}, class {c})")
    whats = lambda i: f"{files[i]} (split {split}, class {classes[i]})"  # noqa: E731
    return SplitSource(split, names, labels, (size, size, 3), _decoded_chunks(files, whats, size, 3), str(path))


# ---------------------------------------------------------------- tieredImageNet

def _tiered_labels(root: Path, split: str) -> tuple[np.ndarray, list[str] | None, Path]:
    path = _first_existing(root, [f"{split}_labels.pkl"], split)
    d = safe_load(path)
    if not isinstance(d, dict):
        raise _fail(f"{path}: expected a dict with key 'label_specific' or 'labels', found {type(d).__name__}")
    key = "label_specific" if "label_specific" in d else "labels" if "labels" in d else None
    if key is None:
        raise _fail(f"{path}: missing key 'label_specific' (or 'labels'); has {sorted(map(str, d))}")
    names = d.get("label_specific_str")
    names = [str(n) for n in names] if isinstance(names, (list, tuple, np.ndarray)) else None
    try:
        raw = np.asarray(d[key])
    except Exception:
        raise _fail(f"{path}: {key!r} is not a list of integers") from None
    return _int_labels(raw, path, key, raw.shape[0] if raw.ndim == 1 else -1), names, path


def _named_classes(raw: np.ndarray, names: list[str] | None, path: Path, split: str):
    labels, values = _remap(raw)
    if names is not None:
        if values.size and values.max() >= len(names):
            raise _fail(f"{path}: label {int(values.max())} has no name in label_specific_str "
                        f"({len(names)} names, split {split})")
        cls = [names[int(v)] for v in values]
    else:
        cls = [f"{split}/{int(v)}" for v in values]  # bare ints: no identity across splits
    return labels, cls


def _tiered_ren(root: Path, split: str, image_size: int | None) -> SplitSource:
    raw, names, lpath = _tiered_labels(root, split)
    path = _first_existing(root, [f"{split}_images_png.pkl"], split)
    items = safe_load(path)
    if isinstance(items, np.ndarray) and items.dtype == object:
        items = list(items)
    if not isinstance(items, (list, tuple)):
        raise _fail(f"{path}: expected a list of PNG-encoded byte arrays, found {type(items).__name__}")
    if len(items) != raw.shape[0]:
        raise _fail(f"{path}: holds {len(items)} images but {lpath.name} has {raw.shape[0]} labels")
    for i, it in enumerate(items):
        if not isinstance(it, (bytes, bytearray, np.ndarray)):
            raise _fail(f"{path}: image {i} is a {type(it).__name__}, expected PNG bytes (split {split})")
    # items stay as unpickled (no second copy of the split); each is wrapped when decoded
    labels, cls = _named_classes(raw, names, lpath, split)
    size = image_size or 84
    whats = lambda i: f"{path} image {i} (split {split}, class {cls[labels[i]]})"  # noqa: E731
    if image_size is None and items:  # check the published size on the first image
        _check_size(_png_size(items[0], whats(0)), path, "images", None)
    return SplitSource(split, cls, labels, (size, size, 3), _decoded_chunks(items, whats, size, 3), str(path))


def _png_size(data: bytes, what: str) -> int:
    try:
        w, h = Image.open(_bytes_io(data)).size
    except Exception as exc:
        raise _fail(f"{what}: unreadable image ({type(exc).__name__}: {exc})") from None
    return w if w == h else max(w, h)


def _tiered_metaoptnet(root: Path, split: str, image_size: int | None) -> SplitSource:
    raw, names, lpath = _tiered_labels(root, split)
    path = _first_existing(root, [f"{split}_images.npz"], split)
    try:
        zf = zipfile.ZipFile(path)
        members = zf.namelist()
    except (OSError, zipfile.BadZipFile) as exc:
        raise _fail(f"{path}: not a readable .npz ({exc})") from None
    if "images.npy" not in members:
        raise _fail(f"{path}: missing key 'images' (has {[m[:-4] for m in members]})")
    with zf.open("images.npy") as f:
        shape, dtype = _npy_header(f, path)
    zf.close()
    if dtype != np.uint8:
        raise _fail(f"{path}: 'images' has dtype {dtype}, expected uint8")
    if len(shape) != 4 or shape[3] != 3 or shape[1] != shape[2]:
        raise _fail(f"{path}: 'images' has shape {shape}, expected (N, H, H, 3)")
    _check_size(shape[1], path, "images", image_size)
    if shape[0] != raw.shape[0]:
        raise _fail(f"{path}: holds {shape[0]} images but {lpath.name} has {raw.shape[0]} labels")
    labels, cls = _named_classes(raw, names, lpath, split)

    def gen():  # stream rows out of the (possibly compressed) zip member
        row = int(np.prod(shape[1:]))
        with zipfile.ZipFile(path) as z, z.open("images.npy") as f:
            _npy_header(f, path)
            for s in range(0, shape[0], CHUNK):
                n = min(CHUNK, shape[0] - s)
                buf = f.read(n * row)
                if len(buf) != n * row:
                    raise _fail(f"{path}: 'images' is truncated at image {s + len(buf) // row}")
                yield _resize_chunk(np.frombuffer(buf, np.uint8).reshape((n,) + tuple(shape[1:])), image_size)

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
        raise _fail(f"{path}: 'images' is not a readable .npy member ({exc})") from None
    if dtype.hasobject:
        raise _fail(f"{path}: 'images' holds Python objects, expected uint8")
    if fortran and len(shape) > 1:
        raise _fail(f"{path}: 'images' is stored in Fortran order; save it C-ordered")
    return tuple(shape), dtype


# ---------------------------------------------------------------- folder tree

_SPLIT_DIRS = {"train": ("train",), "val": ("val", "validation", "valid"), "test": ("test",)}


def _folder_splits(root: Path) -> tuple[str, ...]:
    """The splits present (any subset: a test/ folder alone is a cross-domain test set)."""
    found = tuple(s for s in SPLITS if any((root / d).is_dir() for d in _SPLIT_DIRS[s]))
    if not found:
        raise _fail(f"{root}: no train/, val/ or test/ folder "
                    f"(expected root/<split>/<class>/*.jpg|png)")
    return found


def _folder(root: Path, split: str, image_size: int | None) -> SplitSource:
    folder = next((root / d for d in _SPLIT_DIRS[split] if (root / d).is_dir()), None)
    if folder is None:
        raise _fail(f"{root}: missing {split}/ folder")
    names = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names:
        raise _fail(f"{folder}: no class folders (expected {folder}/<class>/*.jpg|png)")
    files, labels = [], []
    for ci, name in enumerate(names):
        imgs = sorted(p for p in (folder / name).iterdir()
                      if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))
        if not imgs:
            raise _fail(f"{folder / name}: no images (split {split}, class {name})")
        files += imgs
        labels += [ci] * len(imgs)
    size = image_size or 84
    try:
        with Image.open(files[0]) as im:
            channels = 1 if im.mode in ("1", "L", "LA", "I", "I;16", "F") else 3
    except Exception as exc:
        raise _fail(f"{files[0]}: unreadable image ({type(exc).__name__}: {exc}) (split {split}, class {names[0]})") from None
    labels_arr = np.asarray(labels, dtype=np.int64)
    whats = lambda i: f"{files[i]} (split {split}, class {names[labels[i]]})"  # noqa: E731
    return SplitSource(split, names, labels_arr, (size, size, channels),
                       _decoded_chunks(files, whats, size, channels), str(folder))


# ---------------------------------------------------------------- glyphs

def _glyphs_reader(seed: int, image_size: int | None, instances: int, max_classes: int | None):
    from .glyphs import glyph_table, render_glyph_split

    size = image_size or 32
    table = glyph_table()

    def read(split: str) -> SplitSource:
        classes = table[split][:max_classes] if max_classes else table[split]
        labels = np.repeat(np.arange(len(classes), dtype=np.int64), instances)

        def gen():
            yield from render_glyph_split(classes, seed=seed, instances=instances, size=size)
        return SplitSource(split, [c.name for c in classes], labels, (size, size, 1), gen,
                           f"glyphs (matplotlib fonts, seed {seed})",
                           extra={"codepoints": [c.codepoint for c in classes],
                                  "fonts": [list(c.fonts) for c in classes]})
    return read


# ---------------------------------------------------------------- registry / detection

READERS: dict[tuple[str, str], Callable[[Path, str, int | None], SplitSource]] = {
    ("miniimagenet", "learn2learn"): _mini_learn2learn,
    ("miniimagenet", "metaoptnet"): _mini_metaoptnet,
    ("miniimagenet", "ravi"): _mini_ravi,
    ("tieredimagenet", "ren"): _tiered_ren,
    ("tieredimagenet", "metaoptnet"): _tiered_metaoptnet,
    ("folder", "folder"): _folder,
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
                     ("metaoptnet", _MOPT_FILES["train"]),
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
    raise _fail(f"{root}: no {dataset} files found (looked for {looked})")


def resolve_reader(dataset: str, root, fmt: str | None, *, seed: int = 0, image_size: int | None = None,
                   glyph_instances: int = 20, glyph_max_classes: int | None = None) -> Reader:
    key = dataset.lower().replace("-", "").replace("_", "")
    if key not in DATASETS:
        raise _fail(f"unknown dataset {dataset!r} (choose from {', '.join(DATASETS)})")
    if key == "glyphs":
        return Reader("glyphs", "glyphs", SPLITS,
                      _glyphs_reader(seed, image_size, glyph_instances, glyph_max_classes), None)
    if root is None:
        raise _fail(f"dataset {key} needs a root folder")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise _fail(f"{root}: folder not found")
    if fmt is None:
        fmt = detect_format(key, root)
    else:
        fmt = FORMAT_ALIASES.get(key, {}).get(fmt.lower(), fmt.lower())
        if (key, fmt) not in READERS:
            known = sorted(f for d, f in READERS if d == key)
            raise _fail(f"unknown {key} format {fmt!r} (choose from {', '.join(known)})")
    fn = READERS[(key, fmt)]
    splits = _folder_splits(root) if key == "folder" else SPLITS
    return Reader(key, fmt, splits, lambda split: fn(root, split, image_size), root)
