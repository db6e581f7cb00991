"""Seeded episodic batch sampler (plugs into a plain DataLoader as ``batch_sampler``).

Batch ``b`` is drawn from ``np.random.default_rng([seed, b])`` alone, so the batch
sequence is a pure function of (seed, batch index): the same in any process, with
any number of DataLoader workers, and resumable at any batch (``start_batch``).

Each batch is an :class:`EpisodeIndices` list of flat image indices laid out
task-major, then class-major, then shots before queries::

    [task0: class0 (n_shot support, n_query query), class1 (...), ...], [task1: ...]

and carries ``n_way``, ``n_shot``, ``n_query``, ``n_tasks`` so the collate step can
reshape it. Within a task, support and query never share an image.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from ..errors import DataError

__all__ = ["EpisodeSampler", "EpisodeIndices"]

IntOrChoice = int | Sequence[int] | range


class EpisodeIndices(list):
    """A list of flat image indices plus the episode geometry of its batch."""

    def __init__(self, indices, *, n_tasks: int, n_way: int, n_shot: int, n_query: int, batch_index: int = -1):
        super().__init__(indices)
        self.n_tasks, self.n_way, self.n_shot, self.n_query = n_tasks, n_way, n_shot, n_query
        self.batch_index = batch_index

    def __reduce__(self):  # keep the geometry when sent to a worker process
        return (_rebuild, (list(self), self.n_tasks, self.n_way, self.n_shot, self.n_query, self.batch_index))


def _rebuild(indices, n_tasks, n_way, n_shot, n_query, batch_index):
    return EpisodeIndices(indices, n_tasks=n_tasks, n_way=n_way, n_shot=n_shot, n_query=n_query,
                          batch_index=batch_index)


def _choices(value: IntOrChoice, name: str) -> tuple[int, ...]:
    values = (value,) if isinstance(value, (int, np.integer)) else tuple(value)
    if not values or any(int(v) != v or v < (0 if name == "n_query" else 1) for v in values):
        raise DataError(f"{name} must be a positive integer or a non-empty list of them, got {value!r}")
    return tuple(int(v) for v in values)


class EpisodeSampler:
    """Yields ``n_batches`` batches of ``tasks_per_batch`` episodes each.

    ``split``: a PreparedSplit (anything with ``indices_by_class``, ``class_names`` and
    ``split``). ``n_way`` / ``n_shot`` / ``n_query`` may be an int or a list / range of
    ints, one value drawn per batch (all tasks of a batch share it). Raises DataError
    up front if ``n_way`` exceeds the number of classes or a class holds fewer images
    than ``n_shot + n_query``.
    """

    def __init__(self, split, *, n_way: IntOrChoice, n_shot: IntOrChoice, n_query: IntOrChoice,
                 tasks_per_batch: int = 1, n_batches: int = 1, seed: int = 0, start_batch: int = 0):
        self.split = split
        self.ways, self.shots, self.queries = (_choices(n_way, "n_way"), _choices(n_shot, "n_shot"),
                                               _choices(n_query, "n_query"))
        if tasks_per_batch < 1 or n_batches < 0 or not 0 <= start_batch <= max(n_batches, 0):
            raise DataError(f"bad sampler sizes: tasks_per_batch={tasks_per_batch}, n_batches={n_batches}, "
                            f"start_batch={start_batch}")
        if int(seed) < 0:
            raise DataError(f"seed must be a non-negative integer, got {seed}")
        self.tasks_per_batch, self.n_batches = int(tasks_per_batch), int(n_batches)
        self.seed, self.start_batch = int(seed), int(start_batch)
        self._by_class = [np.asarray(i, dtype=np.int64) for i in split.indices_by_class]
        name = getattr(split, "split", "?")
        n_classes = len(self._by_class)
        if max(self.ways) > n_classes:
            raise DataError(f"split {name}: n_way={max(self.ways)} but the split has {n_classes} classes")
        need = max(self.shots) + max(self.queries)
        counts = np.array([len(i) for i in self._by_class])
        if counts.size and counts.min() < need:
            c = int(np.argmin(counts))
            raise DataError(f"split {name}: class {split.class_names[c]!r} has {counts[c]} images, fewer than "
                            f"n_shot + n_query = {need}")

    def __len__(self) -> int:
        return self.n_batches - self.start_batch

    def __iter__(self) -> Iterator[EpisodeIndices]:
        for b in range(self.start_batch, self.n_batches):
            yield self.batch(b)

    def batch(self, b: int) -> EpisodeIndices:
        """Batch ``b``: a pure function of (seed, b)."""
        rng = np.random.default_rng([self.seed, int(b)])
        n_way = self.ways[rng.integers(len(self.ways))] if len(self.ways) > 1 else self.ways[0]
        n_shot = self.shots[rng.integers(len(self.shots))] if len(self.shots) > 1 else self.shots[0]
        n_query = self.queries[rng.integers(len(self.queries))] if len(self.queries) > 1 else self.queries[0]
        k = n_shot + n_query
        out = np.empty((self.tasks_per_batch, n_way, k), dtype=np.int64)
        for t in range(self.tasks_per_batch):
            classes = rng.choice(len(self._by_class), size=n_way, replace=False)
            for j, c in enumerate(classes):
                pool = self._by_class[c]
                out[t, j] = pool[rng.choice(pool.shape[0], size=k, replace=False)]
        return EpisodeIndices(out.ravel().tolist(), n_tasks=self.tasks_per_batch, n_way=n_way,
                              n_shot=n_shot, n_query=n_query, batch_index=b)
