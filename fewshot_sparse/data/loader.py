"""``episode_loader``: a plain torch DataLoader that yields EpisodeBatch objects.

The sampler (:class:`~fewshot_sparse.data.sampler.EpisodeSampler`) decides every
index; the dataset gathers a whole batch at once from the memory map
(``__getitems__``) and builds the EpisodeBatch; workers add no randomness. So the
batches are the same for any ``num_workers`` and resume exactly at ``start_batch``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import DataError
from .episodes import EpisodeBatch
from .fixed_episodes import FixedEpisodes
from .sampler import EpisodeIndices, EpisodeSampler

__all__ = ["episode_loader", "EpisodeDataset", "NumberedBatches", "collate_episodes"]


def collate_episodes(split, idx: EpisodeIndices) -> EpisodeBatch:
    """Gather the images of one sampler batch and lay them out as an EpisodeBatch:
    images float32 in [0, 1], channels-first [B, N*K, C, H, W]; labels 0..N-1 in the
    order of the episode's classes; ``class_ids`` the split's class index [B, N]."""
    b, n, s, q = idx.n_tasks, idx.n_way, idx.n_shot, idx.n_query
    flat = np.asarray(idx, dtype=np.int64)
    if flat.size != b * n * (s + q):
        raise DataError(f"batch of {flat.size} indices does not hold {b} x {n}-way {s}-shot {q}-query episodes")
    gathered = np.take(split.images, flat, axis=0)  # one read of the memory map
    h, w, c = gathered.shape[1:]
    x = gathered.reshape(b, n, s + q, h, w, c)

    def images(part):  # [B, N, k, H, W, C] uint8 -> [B, N*k, C, H, W] float in [0, 1]
        k = part.shape[2]
        out = np.empty((b, n, k, c, h, w), dtype=np.float32)
        np.multiply(part.transpose(0, 1, 2, 5, 3, 4), np.float32(1.0 / 255.0), out=out)
        return torch.from_numpy(out).view(b, n * k, c, h, w)

    way = torch.arange(n, dtype=torch.int64)
    class_ids = torch.from_numpy(np.asarray(split.labels)[flat.reshape(b, n, s + q)[:, :, 0]].astype(np.int64))
    return EpisodeBatch(
        support_images=images(x[:, :, :s]),
        support_labels=way.repeat_interleave(s).expand(b, n * s).contiguous(),
        query_images=images(x[:, :, s:]),
        query_labels=way.repeat_interleave(q).expand(b, n * q).contiguous(),
        class_ids=class_ids,
        n_way=n, n_shot=s, n_query=q,
    )


class EpisodeDataset(Dataset):
    """Map-style view of a split whose batched fetch returns a whole EpisodeBatch."""

    def __init__(self, split):
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int):
        return self.split.images[i], int(self.split.labels[i])

    def __getitems__(self, idx: EpisodeIndices) -> EpisodeBatch:
        return collate_episodes(self.split, idx)


def _identity(batch):
    return batch


class NumberedBatches:
    """The one batch sampler over numbered batches: ``make(b)`` for each batch number
    ``b`` of ``numbers`` (a range for a plain run, this rank's share under DDP)."""

    def __init__(self, make, numbers):
        self.make, self.numbers = make, numbers

    def __len__(self) -> int:
        return len(self.numbers)

    def __iter__(self):
        return (self.make(b) for b in self.numbers)


def episode_loader(split, *, n_way=5, n_shot=5, n_query=15, tasks_per_batch: int = 1, n_batches: int | None = 1,
                   seed: int = 0, start_batch: int = 0, num_workers: int = 0, pin_memory: bool = False,
                   fixed: FixedEpisodes | None = None, sampler: EpisodeSampler | None = None,
                   batch_numbers=None, **loader_kwargs) -> DataLoader:
    """DataLoader of EpisodeBatch over ``split`` (a PreparedSplit).

    With ``fixed``, batches are consecutive groups of ``tasks_per_batch`` saved episodes
    (``n_way``/``n_shot``/``n_query``/``seed`` are then taken from ``fixed``;
    ``n_batches=None`` means all of them). Otherwise batch ``b`` is
    ``EpisodeSampler(...).batch(b)`` for ``b`` in ``start_batch .. n_batches-1``, or for
    each ``b`` of ``batch_numbers`` when given (e.g. one rank's share of an epoch).
    ``sampler``: an EpisodeSampler already built (its settings replace the arguments).
    """
    if fixed is not None:
        fixed.check(split)
        total = math.ceil(len(fixed) / tasks_per_batch)
        stop = total if n_batches is None else min(n_batches, total)
        batches = NumberedBatches(lambda b: fixed.batch(b * tasks_per_batch, (b + 1) * tasks_per_batch),
                                  range(start_batch, max(stop, start_batch)))
    else:
        if sampler is None:
            if batch_numbers is not None:
                n_batches = max(batch_numbers, default=-1) + 1
            if n_batches is None:
                raise DataError("n_batches is required unless fixed episodes are given")
            sampler = EpisodeSampler(split, n_way=n_way, n_shot=n_shot, n_query=n_query,
                                     tasks_per_batch=tasks_per_batch, n_batches=n_batches,
                                     seed=seed, start_batch=start_batch)
        batches = sampler if batch_numbers is None else NumberedBatches(sampler.batch, batch_numbers)
    return DataLoader(EpisodeDataset(split), batch_sampler=batches, collate_fn=_identity,
                      num_workers=num_workers, pin_memory=pin_memory, **loader_kwargs)
