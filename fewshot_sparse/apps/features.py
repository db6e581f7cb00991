"""The feature cache: run the encoder once over the fixed evaluation episodes and keep
the features, so that heads and their hyperparameters (the lambda path, apps/sweep.py)
can be studied without the encoder.

Layout of a cache folder (written into a temporary folder, then renamed into place)::

    features.json               checkpoint, data, split, the data's manifest hash, input
                                shape, way / query / seed, dtype, feature dimension,
                                the checkpoint's head; per shot: files and episode count
    <K>shot/support.npy         float16 [E, way*K, D]   (opened later with mmap)
    <K>shot/query.npy           float16 [E, way*Q, D]
    <K>shot/support_labels.npy  int64 [E, way*K];  query_labels.npy int64 [E, way*Q]
    <K>shot/class_ids.npy       int64 [E, way]  (classes of the split)
    <K>shot/episodes.npz        the episode list (data.FixedEpisodes): the same episodes
                                ``fewshot-sparse eval`` scores with this seed
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from fewshot_sparse.apps.evaluate import open_for_eval
from fewshot_sparse.engine.protocol import (DEFAULT_SEED, EpisodeProtocol, fixed_episodes,
                                            protocol_batches)
from fewshot_sparse.engine.step import model_device
from fewshot_sparse.errors import DataError

FORMAT = "fewshot-sparse-features/1"
META = "features.json"
DTYPES = {"float16": np.float16, "float32": np.float32}
_FLOAT16_MAX = float(np.finfo(np.float16).max)


@dataclass
class ShotFeatures:
    """One shot's cached episodes (numpy arrays; the feature arrays are memory maps)."""

    shot: int
    support: np.ndarray          # [E, way*K, D]
    query: np.ndarray            # [E, way*Q, D]
    support_labels: np.ndarray   # [E, way*K]
    query_labels: np.ndarray     # [E, way*Q]
    class_ids: np.ndarray        # [E, way]

    @property
    def n_episodes(self) -> int:
        return int(self.support.shape[0])

    def batches(self, tasks_per_batch: int, device="cpu", dtype=torch.float32):
        """``(query, support, support_labels, query_labels)`` tensors, ``tasks_per_batch``
        episodes at a time, in ``dtype`` on ``device``."""
        for s in range(0, self.n_episodes, tasks_per_batch):
            e = slice(s, s + tasks_per_batch)
            yield (torch.from_numpy(np.array(self.query[e])).to(device, dtype),
                   torch.from_numpy(np.array(self.support[e])).to(device, dtype),
                   torch.from_numpy(np.array(self.support_labels[e])).to(device),
                   torch.from_numpy(np.array(self.query_labels[e])).to(device))


class FeatureCache:
    """A feature cache folder opened for reading (see the module docstring)."""

    def __init__(self, root):
        self.root = Path(root).expanduser()
        path = self.root / META
        if not path.is_file():
            raise DataError(f"{self.root}: not a feature cache (no {META}); "
                            f"write one with `fewshot-sparse features`")
        try:
            meta = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise DataError(f"{path}: unreadable ({e})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise DataError(f"{path}: not a {FORMAT} file")
        self.meta = meta

    @property
    def shots(self) -> list[int]:
        return sorted(int(k) for k in self.meta["shots"])

    @property
    def way(self) -> int:
        return int(self.meta["way"])

    def shot(self, k: int) -> ShotFeatures:
        if str(k) not in self.meta["shots"]:
            raise DataError(f"{self.root}: no {k}-shot features (it has "
                            f"{', '.join(str(s) for s in self.shots)})")
        folder = self.root / self.meta["shots"][str(k)]["dir"]

        def load(name, mmap=None):
            try:
                return np.load(folder / f"{name}.npy", mmap_mode=mmap, allow_pickle=False)
            except (OSError, ValueError) as e:
                raise DataError(f"{folder / name}.npy: unreadable ({e})") from None

        return ShotFeatures(k, load("support", "r"), load("query", "r"),
                            load("support_labels"), load("query_labels"), load("class_ids"))

    def __repr__(self) -> str:
        return (f"FeatureCache({str(self.root)!r}, shots={self.shots}, "
                f"features={self.meta['n_features']})")


def extract_features(checkpoint, out, *, data=None, split: str = "test", way: int = 5,
                     shots: Sequence[int] = (1, 5), query: int = 15, episodes: int = 1000,
                     seed: int = DEFAULT_SEED, tasks_per_batch: int = 8,
                     dtype: str = "float16", device: str = "auto",
                     episodes_dir=None, progress: bool = True) -> FeatureCache:
    """Encode the fixed ``split`` episodes (those ``evaluate`` scores with this seed) once
    and write the feature cache ``out``; returns it opened.

    ``episodes_dir``: reuse (or save) the episode lists there, as ``evaluate`` does
    (default: drawn from ``seed``, stored only in the cache). ``dtype``: float16 (half
    the disk; refused when a feature exceeds float16's range) or float32.
    """
    if dtype not in DTYPES:
        raise DataError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    protocol = EpisodeProtocol(way=way, shots=shots, query=query, episodes=episodes,
                               seed=seed, tasks_per_batch=tasks_per_batch)
    ctx = open_for_eval(checkpoint, data=data, split=split, device=device)
    out = Path(out).expanduser()
    if out.exists() and not (out / META).is_file() and any(out.iterdir()):
        raise DataError(f"{out}: exists and is not a feature cache; refusing to overwrite it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        shots_meta, n_features = {}, None
        for shot in protocol.shots:
            path = None if episodes_dir is None else (
                Path(episodes_dir) / protocol.file_name(ctx.split.split, shot))
            fixed, _ = fixed_episodes(ctx.split, protocol, shot, path)
            t0 = time.perf_counter()
            n_features = _encode_shot(ctx, protocol, fixed, tmp / f"{shot}shot", dtype,
                                      progress)
            shots_meta[str(shot)] = {"dir": f"{shot}shot", "episodes": len(fixed),
                                     "encoder_seconds": round(time.perf_counter() - t0, 3)}
        meta = {"format": FORMAT, "checkpoint": ctx.name, "data": str(ctx.data),
                "split": split, "data_hash": ctx.split.content_hash,
                "input_shape": ctx.input_shape, "way": way, "query": query, "seed": seed,
                "dtype": dtype, "n_features": n_features,
                "head": {"name": ctx.head, "kwargs": ctx.head_kwargs,
                         "values": _head_values(ctx.model.head)},
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "shots": shots_meta}
        (tmp / META).write_text(json.dumps(meta, indent=1) + "\n")
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return FeatureCache(out)


@torch.no_grad()
def _encode_shot(ctx, protocol, fixed, folder: Path, dtype: str, progress: bool) -> int:
    folder.mkdir(parents=True)
    fixed.save(folder / "episodes.npz")
    model, device = ctx.model, model_device(ctx.model)
    was_training = model.training
    model.eval()
    arrays: dict = {}
    pos = 0
    loader = protocol_batches(ctx.split, fixed, protocol.tasks_per_batch)
    bar = tqdm(loader, total=len(loader), leave=False, unit="batch", disable=not progress,
               desc=f"features {protocol.way}-way {fixed.n_shot}-shot")
    try:
        for batch in bar:
            batch = ctx.normalize(batch.to(device))
            support, query = model.features(batch)
            parts = {"support": support, "query": query, "support_labels": batch.support_labels,
                     "query_labels": batch.query_labels, "class_ids": batch.class_ids}
            if not arrays:
                arrays = {k: np.lib.format.open_memmap(
                    folder / f"{k}.npy", mode="w+",
                    dtype=DTYPES[dtype] if v.is_floating_point() else np.int64,
                    shape=(len(fixed), *v.shape[1:])) for k, v in parts.items()}
            for k, v in parts.items():
                v = v.detach().cpu()
                if v.is_floating_point() and dtype == "float16":
                    big = float(v.abs().max())
                    if not big <= _FLOAT16_MAX:
                        raise DataError(f"a feature of {ctx.name} reaches {big:.3g}, beyond "
                                        f"float16's range; use dtype float32")
                arrays[k][pos:pos + v.shape[0]] = v.numpy()
            pos += batch.n_tasks
    finally:
        model.train(was_training)
    n_features = int(arrays["support"].shape[-1])
    for a in arrays.values():
        a.flush()
    return n_features


@torch.no_grad()
def _head_values(head) -> dict:
    """The checkpoint head's hyperparameter values as trained (learned ones included)."""
    values = {}
    for name in ("lambda1", "lambda2", "scale"):
        v = getattr(head, name, None)
        if isinstance(v, torch.nn.Module):
            values[name] = float(v(torch.float64, torch.device("cpu")))
    solver = getattr(head, "solver", None)
    if solver is not None and hasattr(solver, "smoothing"):
        values["smoothing"] = float(solver.smoothing)
    return values


def _swap_into_place(tmp: Path, out: Path) -> None:
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / "cache")
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


__all__ = ["FeatureCache", "ShotFeatures", "extract_features"]
