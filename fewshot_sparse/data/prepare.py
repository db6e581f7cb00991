"""``prepare``: read a dataset in any supported on-disk format once and write the one
fast cache every other part of the package reads (see docs/formats.md).

Cache layout::

    out/manifest.json          per split: class names, class counts, image count, image
                               shape, channel mean/std; source format; content hash
    out/<split>/images.npy     uint8 [N, H, W, C]  (opened later with mmap)
    out/<split>/labels.npy     int64 [N], 0..n_classes-1

Everything is written into a temporary folder next to ``out`` and renamed into place
at the end, so ``out`` is never half-written. An existing ``out`` is replaced only when
it is this project's cache (or empty), and only the cache's own files (cache_files.py).
Images are streamed into an ``np.lib.format.open_memmap``: a split is never held in
memory twice.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from ..errors import DataError
from ..files import WRITE_ERRNOS, os_error
from .cache_files import CACHE_FORMAT, MANIFEST, check_replaceable, replace_cache
from .readers import PUBLISHED_COUNTS, SplitSource, resolve_reader

__all__ = ["prepare", "DataWarning", "MANIFEST", "CACHE_FORMAT"]

STATS_STRIDE = 8  # per-channel mean / std are estimated on every 8th image


class DataWarning(UserWarning):
    """A dataset differs from its published description but is still usable."""


def prepare(dataset: str, root: str | Path | None, out: str | Path, *, fmt: str | None = None,
            seed: int = 0, image_size: int | None = None, progress: bool = True,
            glyph_instances: int = 20, glyph_max_classes: int | None = None,
            splits: Sequence[str] | None = None) -> Path:
    """Prepare ``dataset`` found under ``root`` (in format ``fmt``, detected when None)
    into the cache folder ``out``; returns ``out``.

    ``dataset``: miniimagenet | tieredimagenet | folder | glyphs (``root`` unused).
    ``image_size``: resize to this square size (default: 84, glyphs 32).
    ``glyph_instances`` / ``glyph_max_classes``: glyph set only (instances per class,
    cap on classes per split for a small variant).
    ``splits``: prepare only these (e.g. ``["test"]`` for a set that only evaluates);
    default: every split the source has (a ``folder`` tree: whichever of train/, val/,
    test/ exist). The manifest lists the splits written.
    """
    reader = resolve_reader(dataset, root, fmt, seed=seed, image_size=image_size,
                            glyph_instances=glyph_instances, glyph_max_classes=glyph_max_classes)
    wanted = select_splits(reader.splits, splits, reader.root)
    out = Path(out).expanduser()
    check_replaceable(out, wanted)  # refuse a foreign folder before any work
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    except OSError as e:
        raise os_error(e, "cannot write to", out.parent) from None
    try:
        digest = hashlib.sha256()
        splits: dict[str, dict] = {}
        seen: dict[str, str] = {}
        for split in wanted:
            src = reader.read(split)
            info = _write_split(src, tmp / split, digest, progress, reader.dataset)
            _check_published(reader.dataset, split, info)
            for name in info["class_names"]:
                if name in seen:
                    raise DataError(f"{src.origin}: class {name!r} is in both split {seen[name]} "
                                    f"and split {split}")
                seen[name] = split
            splits[split] = info
            del src
        manifest = {
            "format": CACHE_FORMAT,
            "dataset": reader.dataset,
            "source_format": reader.fmt,
            "source_root": str(reader.root) if reader.root is not None else None,
            "seed": seed,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "content_hash": "sha256:" + digest.hexdigest(),
            "splits": splits,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        replace_cache(tmp, out, check_replaceable(out, list(splits)), list(splits))
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if e.errno in WRITE_ERRNOS:  # full disk, read-only: the old cache is intact
            raise os_error(e, f"cannot prepare {out}: writing", e.filename or tmp) from None
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def select_splits(available: Sequence[str], wanted: Sequence[str] | None, root) -> tuple:
    """``wanted`` (in the source's order) after checking the source has each of them."""
    if wanted is None:
        return tuple(available)
    wanted = [str(w) for w in wanted]
    if not wanted:
        raise DataError("prepare: splits is empty (name at least one of "
                        f"{', '.join(available)})")
    for w in wanted:
        if w not in available:
            where = f"{root}" if root is not None else "the source"
            raise DataError(f"{where}: no split {w!r} (found: {', '.join(available)})")
    return tuple(s for s in available if s in wanted)


def _allocate(path: Path) -> None:
    """Reserve the memory-mapped file's blocks now: on a full disk this fails with
    ENOSPC here, where writing through the map would kill the process with SIGBUS."""
    with open(path, "r+b") as f:
        try:
            os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise OSError(e.errno, e.strerror, str(path)) from None
        except AttributeError:  # no posix_fallocate on this platform
            pass


def _write_split(src: SplitSource, folder: Path, digest, progress: bool, dataset: str) -> dict:
    folder.mkdir(parents=True)
    n = len(src)
    n_classes = len(src.class_names)
    if n == 0:
        raise DataError(f"{src.origin}: split {src.split} holds no images")
    if len(set(src.class_names)) != n_classes:
        dup = next(c for c in src.class_names if src.class_names.count(c) > 1)
        raise DataError(f"{src.origin}: class {dup!r} appears twice in split {src.split}")
    labels = np.asarray(src.labels, dtype=np.int64)
    if labels.min() < 0 or labels.max() >= n_classes:
        raise DataError(f"{src.origin}: label {int(labels.max())} out of range 0..{n_classes - 1} "
                        f"(split {src.split})")
    counts = np.bincount(labels, minlength=n_classes)
    if (counts == 0).any():
        c = src.class_names[int(np.argmin(counts))]
        raise DataError(f"{src.origin}: class {c!r} has no images (split {src.split})")
    shape = tuple(int(s) for s in src.image_shape)
    images = np.lib.format.open_memmap(folder / "images.npy", mode="w+", dtype=np.uint8,
                                       shape=(n,) + shape)
    _allocate(folder / "images.npy")
    digest.update(json.dumps([src.split, [n, *shape], src.class_names]).encode())
    digest.update(labels.tobytes())
    c = shape[2]
    total = np.zeros(c, dtype=np.float64)
    total_sq = np.zeros(c, dtype=np.float64)
    pos = sampled = 0
    bar = tqdm(total=n, desc=f"{dataset} {src.split}", unit="img", disable=not progress,
               leave=False, mininterval=0.5)
    try:
        for chunk in src.chunks():
            if chunk.dtype != np.uint8 or chunk.shape[1:] != shape:
                raise DataError(f"{src.origin}: image {pos} has shape {chunk.shape[1:]} / dtype "
                                f"{chunk.dtype}, expected {shape} uint8 (split {src.split})")
            if pos + chunk.shape[0] > n:
                raise DataError(f"{src.origin}: more images than labels (split {src.split})")
            images[pos:pos + chunk.shape[0]] = chunk
            digest.update(np.ascontiguousarray(chunk).data)
            flat = chunk[::STATS_STRIDE].reshape(-1, c)  # channel statistics: every 8th image
            sampled += flat.shape[0]
            total += flat.sum(0, dtype=np.float64)
            total_sq += np.einsum("ij,ij->j", flat, flat, dtype=np.float64)
            pos += chunk.shape[0]
            bar.update(chunk.shape[0])
    finally:
        bar.close()
    if pos != n:
        raise DataError(f"{src.origin}: {pos} images for {n} labels (split {src.split})")
    images.flush()
    del images
    np.save(folder / "labels.npy", labels)
    mean = total / sampled / 255.0
    std = np.sqrt(np.maximum(total_sq / sampled / 255.0**2 - mean**2, 0.0))
    info = {
        "n_images": n,
        "n_classes": n_classes,
        "image_shape": list(shape),
        "class_names": list(src.class_names),
        "class_counts": counts.tolist(),
        "mean": mean.round(6).tolist(),
        "std": std.round(6).tolist(),
        "source": src.origin,
    }
    info.update(src.extra)
    return info


def _check_published(dataset: str, split: str, info: dict) -> None:
    published = PUBLISHED_COUNTS.get(dataset, {}).get(split)
    if published is None:
        return
    classes, images = published
    if (info["n_classes"], info["n_images"]) != (classes, images):
        warnings.warn(f"{dataset} split {split}: {info['n_classes']} classes / {info['n_images']} images, "
                      f"published {classes} / {images}", DataWarning, stacklevel=3)
