"""A fixed, saved list of evaluation episodes, so that every model and every run is
scored on exactly the same tasks."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from .sampler import EpisodeIndices, EpisodeSampler

__all__ = ["FixedEpisodes", "make_fixed_episodes"]


@dataclass
class FixedEpisodes:
    """``indices`` int64 [E, n_way, n_shot + n_query]: flat image indices of each episode,
    class-major, shots before queries (the sampler's layout)."""

    indices: np.ndarray
    n_way: int
    n_shot: int
    n_query: int
    split: str
    seed: int
    content_hash: str | None = None

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def batch(self, start: int, stop: int) -> EpisodeIndices:
        rows = self.indices[start:stop]
        return EpisodeIndices(rows.ravel().tolist(), n_tasks=rows.shape[0], n_way=self.n_way,
                              n_shot=self.n_shot, n_query=self.n_query, batch_index=start)

    def check(self, split) -> None:
        """DataError unless these episodes index ``split`` (same images, same classes)."""
        if self.content_hash and getattr(split, "content_hash", None) not in (None, self.content_hash):
            raise DataError(f"fixed episodes were made on another cache (hash {self.content_hash[:19]}...) "
                            f"than {getattr(split, 'root', split)}")
        if self.indices.size and int(self.indices.max()) >= len(split):
            raise DataError(f"fixed episodes index image {int(self.indices.max())}, "
                            f"split {split.split} has {len(split)}")
        labels = np.asarray(split.labels)[self.indices]
        if not (labels == labels[:, :, :1]).all():
            raise DataError(f"fixed episodes do not match the classes of split {split.split}")

    def save(self, path: str | Path) -> Path:
        """Save as .json (readable) or .npz (compact; any other suffix)."""
        path = Path(path)
        meta = {"n_way": self.n_way, "n_shot": self.n_shot, "n_query": self.n_query, "split": self.split,
                "seed": self.seed, "content_hash": self.content_hash, "shape": list(self.indices.shape)}
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".json":
            path.write_text(json.dumps({**meta, "indices": self.indices.tolist()}))
        else:
            with open(path, "wb") as f:
                np.savez(f, indices=self.indices, meta=np.array(json.dumps(meta)))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "FixedEpisodes":
        path = Path(path)
        try:
            if path.suffix == ".json":
                d = json.loads(path.read_text())
                indices = np.asarray(d.pop("indices"), dtype=np.int64)
            else:
                with np.load(path, allow_pickle=False) as z:
                    indices = z["indices"].astype(np.int64)
                    d = json.loads(str(z["meta"]))
            shape = tuple(d.pop("shape"))
            if indices.shape != shape or shape[1:] != (d["n_way"], d["n_shot"] + d["n_query"]):
                raise ValueError(f"indices shape {indices.shape} does not match {shape}")
            return cls(indices=indices, n_way=int(d["n_way"]), n_shot=int(d["n_shot"]), n_query=int(d["n_query"]),
                       split=str(d["split"]), seed=int(d["seed"]), content_hash=d.get("content_hash"))
        except FileNotFoundError:
            raise DataError(f"{path}: file not found") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{path}: not a fixed-episodes file ({type(exc).__name__}: {exc})") from None


def make_fixed_episodes(split, n_way: int, n_shot: int, n_query: int, n_episodes: int, seed: int) -> FixedEpisodes:
    """``n_episodes`` episodes drawn as :class:`EpisodeSampler` draws them (one per batch)."""
    sampler = EpisodeSampler(split, n_way=n_way, n_shot=n_shot, n_query=n_query, tasks_per_batch=1,
                             n_batches=n_episodes, seed=seed)
    k = n_shot + n_query
    indices = np.array([list(b) for b in sampler], dtype=np.int64).reshape(n_episodes, n_way, k)
    return FixedEpisodes(indices, n_way, n_shot, n_query, getattr(split, "split", "?"), seed,
                         getattr(split, "content_hash", None))
