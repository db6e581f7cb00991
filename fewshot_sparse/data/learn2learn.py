"""learn2learn tasks as this package's episodes (no import of learn2learn needed here).

A learn2learn ``TaskDataset`` / ``Taskset`` yields a task as ``(data [N, ...], labels [N])``
(after ``NWays``, ``KShots``, ``LoadData``, ``RemapLabels``). :func:`episode_from_task`
turns one into an :class:`EpisodeBatch` of one episode, and :func:`episodes_from_tasks`
stacks several; both accept either

* the raw pair ``(data, labels)`` with ``n_shot``: per class, the first ``n_shot``
  samples (in the task's order) are the support and the rest the query, exactly what
  ``learn2learn.data.utils.partition_task(data, labels, shots=n_shot)`` does; or
* the partitioned pair ``((support_data, support_labels), (query_data, query_labels))``.

Classes are numbered 0..N-1 in the order of their label values (as ``labels.unique()``
sorts them); ``class_ids`` keeps the task's own label values. Support and query are laid
out class by class, as the package's sampler does. Every class needs the same number of
support and of query samples (learn2learn's own assumption).
"""

from __future__ import annotations

from typing import Iterable, Optional, Sequence

import torch

from ..errors import DataError
from .episodes import EpisodeBatch

__all__ = ["episode_from_task", "episodes_from_tasks"]


def _pair(obj, what: str):
    if not isinstance(obj, (tuple, list)) or len(obj) != 2:
        raise DataError(f"{what}: expected a (data, labels) pair, got {type(obj).__name__}")
    data, labels = obj
    if not torch.is_tensor(data) or not torch.is_tensor(labels):
        raise DataError(f"{what}: data and labels must be tensors")
    if labels.dim() != 1 or data.shape[0] != labels.shape[0]:
        raise DataError(f"{what}: {tuple(data.shape)} data for labels of shape "
                        f"{tuple(labels.shape)} (expected [N, ...] and [N])")
    return data, labels.long()


def _class_major(data, labels, classes, what: str):
    """Samples of each class in turn (task order kept within a class), and the count."""
    idx = [torch.nonzero(labels == c).flatten() for c in classes]
    counts = {int(i.numel()) for i in idx}
    if len(counts) != 1:
        raise DataError(f"{what}: classes have different numbers of samples "
                        f"({sorted(int(i.numel()) for i in idx)}); every class needs as many")
    order = torch.cat(idx)
    return data[order], counts.pop()


def episode_from_task(task, n_shot: Optional[int] = None) -> EpisodeBatch:
    """One learn2learn task -> an EpisodeBatch with B = 1 (see the module docstring)."""
    if (isinstance(task, (tuple, list)) and len(task) == 2
            and isinstance(task[0], (tuple, list))):
        s_data, s_labels = _pair(task[0], "support")
        q_data, q_labels = _pair(task[1], "query")
    else:
        data, labels = _pair(task, "task")
        if n_shot is None or n_shot < 1:
            raise DataError("a (data, labels) task needs n_shot >= 1 (support samples per "
                            "class); the rest of each class is the query")
        first = torch.zeros_like(labels, dtype=torch.bool)
        for c in labels.unique():
            where = torch.nonzero(labels == c).flatten()
            if where.numel() <= n_shot:
                raise DataError(f"task: class {int(c)} has {where.numel()} samples, "
                                f"n_shot={n_shot} leaves none for the query")
            first[where[:n_shot]] = True
        s_data, s_labels = data[first], labels[first]
        q_data, q_labels = data[~first], labels[~first]
    classes = s_labels.unique()
    if not torch.equal(classes, q_labels.unique()):
        raise DataError(f"task: support classes {classes.tolist()} differ from query "
                        f"classes {q_labels.unique().tolist()}")
    n_way = int(classes.numel())
    if n_way < 2:
        raise DataError(f"task: {n_way} class; an episode needs at least 2")
    support, k = _class_major(s_data, s_labels, classes, "support")
    query, q = _class_major(q_data, q_labels, classes, "query")
    ways = torch.arange(n_way)
    return EpisodeBatch(
        support_images=support.unsqueeze(0), support_labels=ways.repeat_interleave(k)[None],
        query_images=query.unsqueeze(0), query_labels=ways.repeat_interleave(q)[None],
        class_ids=classes.cpu()[None], n_way=n_way, n_shot=k, n_query=q)


def episodes_from_tasks(tasks: Iterable, n_shot: Optional[int] = None) -> EpisodeBatch:
    """Several learn2learn tasks of one shape -> one EpisodeBatch (B = number of tasks)."""
    eps: Sequence[EpisodeBatch] = [episode_from_task(t, n_shot) for t in tasks]
    if not eps:
        raise DataError("no tasks given")
    first = eps[0]
    for i, e in enumerate(eps[1:], 1):
        if (e.n_way, e.n_shot, e.n_query) != (first.n_way, first.n_shot, first.n_query) or \
                e.support_images.shape != first.support_images.shape:
            raise DataError(f"task {i} is {e.n_way}-way {e.n_shot}-shot {e.n_query}-query "
                            f"{tuple(e.support_images.shape[2:])}, task 0 is {first.n_way}-way "
                            f"{first.n_shot}-shot {first.n_query}-query "
                            f"{tuple(first.support_images.shape[2:])}")
    return EpisodeBatch(
        support_images=torch.cat([e.support_images for e in eps]),
        support_labels=torch.cat([e.support_labels for e in eps]),
        query_images=torch.cat([e.query_images for e in eps]),
        query_labels=torch.cat([e.query_labels for e in eps]),
        class_ids=torch.cat([e.class_ids for e in eps]),
        n_way=first.n_way, n_shot=first.n_shot, n_query=first.n_query)
