"""Which files a prepared cache owns, and how a new cache replaces an old one without
touching anything else in the folder (see docs/failure-behaviour.md).

A folder may be replaced by ``prepare`` only when it is empty or its ``manifest.json``
is this project's: the cache format tag, a well-formed ``sha256:`` content hash and a
``splits`` object. Even then only the cache's own files move: ``manifest.json`` and
``<split>/images.npy`` / ``<split>/labels.npy`` of every split the manifest lists, and
the episode lists saved in ``episodes/`` for that cache.
Anything else the user keeps there (notes, other folders, saved episode lists) stays.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from ..errors import DataError
from .fixed_episodes import FixedEpisodes

MANIFEST = "manifest.json"
CACHE_FORMAT = "fewshot-sparse-prepared/1"
SPLIT_FILES = ("images.npy", "labels.npy")
EPISODES = "episodes"  # saved evaluation episode lists (engine/protocol.py)
_HASH = re.compile(r"sha256:[0-9a-f]{64}")
_SPLIT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def project_manifest(folder: Path):
    """The folder's manifest when it is this project's, else None."""
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not (isinstance(manifest, dict) and manifest.get("format") == CACHE_FORMAT
            and isinstance(manifest.get("content_hash"), str)
            and _HASH.fullmatch(manifest["content_hash"])
            and isinstance(manifest.get("splits"), dict)
            and all(isinstance(s, str) and _SPLIT_NAME.fullmatch(s) and s not in (".", "..")
                    for s in manifest["splits"])):
        return None
    return manifest


def owned_files(folder: Path, manifest: dict) -> list[Path]:
    """The files of ``folder`` the cache described by ``manifest`` wrote (that exist),
    the manifest first; also the episode lists the project saved in ``episodes/`` for
    this very cache (same content hash), which a new cache makes stale."""
    files = [folder / MANIFEST]
    for split in manifest["splits"]:
        files += [folder / split / f for f in SPLIT_FILES if (folder / split / f).is_file()]
    for path in sorted((folder / EPISODES).glob("*.npz")):
        try:
            if FixedEpisodes.load(path).content_hash == manifest["content_hash"]:
                files.append(path)
        except DataError:
            pass  # not an episode list of this cache: not ours to delete
    return files


def check_replaceable(out: Path, new_splits) -> list[Path]:
    """The files of ``out`` a new cache with ``new_splits`` replaces; DataError naming the
    folder when ``out`` holds anything that is not this project's cache in the way."""
    if not out.exists():
        return []
    if not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder; refusing to overwrite it")
    manifest = project_manifest(out)
    if manifest is None:
        if any(out.iterdir()):
            raise DataError(f"{out}: exists, is not empty and is not a prepared cache (no "
                            f"fewshot-sparse {MANIFEST}); refusing to overwrite it")
        return []
    owned = owned_files(out, manifest)
    for split in new_splits:
        target = out / split
        if target.exists() and not target.is_dir():
            raise DataError(f"{target}: exists and is not a folder; refusing to overwrite it")
        for f in SPLIT_FILES:
            if (target / f).exists() and (target / f) not in owned:
                raise DataError(f"{target / f}: not written by the cache in {out}; "
                                f"refusing to overwrite it")
    return owned


def replace_cache(tmp: Path, out: Path, owned: list[Path], new_splits) -> None:
    """Move the new cache in ``tmp`` into ``out``, replacing only ``owned`` files.

    The old manifest goes first and the new one comes last, so ``out`` never looks like
    a complete cache while files move; if a move fails, the old files are put back.
    """
    out.mkdir(parents=True, exist_ok=True)
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    moved: list[tuple[Path, Path]] = []   # (original place, place in ``old``)
    placed: list[Path] = []
    try:
        for i, f in enumerate(owned):
            dest = old / f"{i}-{f.name}"
            os.replace(f, dest)
            moved.append((f, dest))
        for split in new_splits:
            (out / split).mkdir(exist_ok=True)
            for f in SPLIT_FILES:
                os.replace(tmp / split / f, out / split / f)
                placed.append(out / split / f)
        os.replace(tmp / MANIFEST, out / MANIFEST)
    except BaseException:
        for p in placed:
            p.unlink(missing_ok=True)
        for original, dest in reversed(moved):
            original.parent.mkdir(parents=True, exist_ok=True)
            os.replace(dest, original)
        shutil.rmtree(old, ignore_errors=True)
        raise
    for original, _ in moved:  # split folders the new cache no longer has, if now empty
        if original.parent != out and not any(original.parent.iterdir()):
            original.parent.rmdir()
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(tmp, ignore_errors=True)
