"""Per-task feature usage statistics: pure functions on arrays.

Inputs, for T tasks over D features with N classes per task:

* ``active``      [T, D] bool   the features each task's classifier uses
                                (``HeadOutput.active``: non-zero weight rows)
* ``group_norms`` [T, D] float  row norms of the fitted weights ``||W_d||_2``
* ``class_ids``   [T, N] int    global class index of each of the task's classes

Everything here accepts numpy arrays or torch tensors and returns numpy arrays or plain
Python numbers; nothing here touches a model, a file or a figure.

Conventions
-----------
The Jaccard overlap of two active sets ``A, B`` is ``|A & B| / |A | B|``. When both sets
are empty it is undefined and reported as NaN; means over pairs skip NaNs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from fewshot_sparse.errors import FewshotSparseError


def as_numpy(x) -> np.ndarray:
    """A numpy view/copy of a numpy array, torch tensor (any device) or sequence."""
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch here
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _check_active(active) -> np.ndarray:
    a = as_numpy(active)
    if a.ndim != 2:
        raise FewshotSparseError(f"active masks must be [tasks, features], got shape {a.shape}")
    return a.astype(bool, copy=False)


def active_counts(active) -> np.ndarray:
    """Number of active features of each task, [T] int64."""
    return _check_active(active).sum(axis=1).astype(np.int64)


def usage_counts(active) -> np.ndarray:
    """Number of tasks that use each feature, [D] int64."""
    return _check_active(active).sum(axis=0).astype(np.int64)


def usage_frequency(active) -> np.ndarray:
    """Fraction of tasks that use each feature, [D] float64 (0 when there are no tasks)."""
    a = _check_active(active)
    if a.shape[0] == 0:
        return np.zeros(a.shape[1])
    return a.mean(axis=0, dtype=np.float64)


def usage_order(active) -> np.ndarray:
    """Feature indices sorted by decreasing usage (ties: lower index first), [D]."""
    counts = usage_counts(active)
    return np.lexsort((np.arange(counts.size), -counts))


def jaccard_matrix(active) -> np.ndarray:
    """Pairwise Jaccard overlap of the tasks' active sets, [T, T] float64.

    NaN where both sets are empty (including the diagonal of an empty task).
    """
    a = _check_active(active).astype(np.float32)
    inter = a @ a.T                                # |A & B| (exact in float32 for D < 2**24)
    sizes = a.sum(axis=1)
    union = sizes[:, None] + sizes[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        jac = np.where(union > 0, inter / np.maximum(union, 1), np.nan)
    return jac.astype(np.float64)


def _offdiag_pairs(t: int):
    return np.triu_indices(t, k=1)


def mean_jaccard(jac: np.ndarray) -> float:
    """Mean Jaccard overlap over distinct pairs of tasks (NaN pairs skipped; NaN if none)."""
    jac = np.asarray(jac)
    i, j = _offdiag_pairs(jac.shape[0])
    vals = jac[i, j]
    vals = vals[~np.isnan(vals)]
    return float(vals.mean()) if vals.size else float("nan")


def shared_class_overlap(jac: np.ndarray, class_ids) -> dict:
    """Do tasks that share classes share more features?

    Splits the distinct task pairs into those sharing at least one class and those sharing
    none, and returns ``{"share_mean", "share_pairs", "none_mean", "none_pairs"}``:
    the mean Jaccard overlap (NaN when a group is empty) and the number of pairs of each
    group (pairs whose Jaccard is NaN are left out of both).
    """
    jac = np.asarray(jac)
    c = as_numpy(class_ids).astype(np.int64)
    if c.ndim != 2 or c.shape[0] != jac.shape[0]:
        raise FewshotSparseError(
            f"class_ids must be [tasks, n_way] with {jac.shape[0]} tasks, got {c.shape}")
    t = c.shape[0]
    if t == 0:
        shares = np.zeros((0, 0), dtype=bool)
    else:
        n_classes = int(c.max()) + 1
        member = np.zeros((t, n_classes), dtype=np.float32)
        member[np.repeat(np.arange(t), c.shape[1]), c.reshape(-1)] = 1.0
        shares = (member @ member.T) > 0
    i, j = _offdiag_pairs(t)
    vals, s = jac[i, j], shares[i, j]
    ok = ~np.isnan(vals)
    share_vals, none_vals = vals[ok & s], vals[ok & ~s]
    return {
        "share_mean": float(share_vals.mean()) if share_vals.size else float("nan"),
        "share_pairs": int(share_vals.size),
        "none_mean": float(none_vals.mean()) if none_vals.size else float("nan"),
        "none_pairs": int(none_vals.size),
    }


def usage_per_class(active, class_ids, n_classes: Optional[int] = None):
    """Feature usage of the tasks that contain each class.

    Returns ``(tasks_per_class [C] int64, usage [C, D] float64)`` where ``usage[c, d]`` is
    the fraction of the tasks containing class ``c`` whose classifier uses feature ``d``
    (0 for a class that appears in no task). ``C`` is ``n_classes`` or ``max(class_ids)+1``.
    """
    a = _check_active(active).astype(np.float64)
    c = as_numpy(class_ids).astype(np.int64)
    if c.ndim != 2 or c.shape[0] != a.shape[0]:
        raise FewshotSparseError(
            f"class_ids must be [tasks, n_way] with {a.shape[0]} tasks, got {c.shape}")
    if n_classes is None:
        n_classes = int(c.max()) + 1 if c.size else 0
    member = np.zeros((a.shape[0], n_classes))
    for col in range(c.shape[1]):
        member[np.arange(a.shape[0]), c[:, col]] = 1.0
    tasks = member.sum(axis=0)
    usage = member.T @ a
    usage = np.divide(usage, tasks[:, None], out=np.zeros_like(usage), where=tasks[:, None] > 0)
    return tasks.astype(np.int64), usage


@dataclass
class FeatureUsageStats:
    """All per-task feature-usage statistics of T tasks over D features.

    Built by :func:`compute_feature_usage`; consumed by the figure, export and summary
    functions of :mod:`fewshot_sparse.analysis`.
    """

    active: np.ndarray                    # [T, D] bool
    group_norms: Optional[np.ndarray]     # [T, D] float or None
    class_ids: Optional[np.ndarray]       # [T, N] int or None
    counts: np.ndarray                    # [T] active features per task
    usage: np.ndarray                     # [D] fraction of tasks using each feature
    order: np.ndarray                     # [D] features by decreasing usage
    jaccard: np.ndarray                   # [T, T]
    mean_jaccard: float
    class_overlap: Optional[dict] = None  # shared_class_overlap(...) or None
    class_tasks: Optional[np.ndarray] = None  # [C] tasks containing each class
    class_usage: Optional[np.ndarray] = None  # [C, D]
    meta: dict = field(default_factory=dict)  # free-form (way, shot, head, checkpoint...)

    @property
    def n_tasks(self) -> int:
        return int(self.active.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.active.shape[1])

    @property
    def n_ever_used(self) -> int:
        return int((self.usage > 0).sum())

    @property
    def n_always_used(self) -> int:
        return int((self.usage >= 1).sum()) if self.n_tasks else 0


def compute_feature_usage(active, group_norms=None, class_ids=None, *,
                          n_classes: Optional[int] = None,
                          meta: Optional[dict] = None) -> FeatureUsageStats:
    """Compute every statistic from active masks [T, D] (and optionally the group norms
    [T, D] and class ids [T, N]). Accepts numpy arrays or torch tensors."""
    a = _check_active(active).copy()
    g = None if group_norms is None else as_numpy(group_norms).astype(np.float32)
    if g is not None and g.shape != a.shape:
        raise FewshotSparseError(
            f"group_norms shape {g.shape} does not match active masks {a.shape}")
    c = None if class_ids is None else as_numpy(class_ids).astype(np.int64)
    jac = jaccard_matrix(a)
    stats = FeatureUsageStats(
        active=a, group_norms=g, class_ids=c, counts=active_counts(a),
        usage=usage_frequency(a), order=usage_order(a), jaccard=jac,
        mean_jaccard=mean_jaccard(jac), meta=dict(meta or {}))
    if c is not None and c.size:
        stats.class_overlap = shared_class_overlap(jac, c)
        stats.class_tasks, stats.class_usage = usage_per_class(a, c, n_classes)
    return stats


def summary_text(stats: FeatureUsageStats) -> str:
    """A short human-readable summary of the statistics (a few lines)."""
    t, d = stats.n_tasks, stats.n_features
    lines = []
    if stats.meta:
        lines.append("  ".join(f"{k}={v}" for k, v in stats.meta.items()))
    lines.append(f"{t} tasks, {d} features")
    if t:
        q = np.percentile(stats.counts, [0, 25, 50, 75, 100])
        lines.append(
            f"active features per task: mean {stats.counts.mean():.1f} "
            f"({100 * stats.counts.mean() / max(d, 1):.1f}% of {d}), "
            f"min {q[0]:.0f} / q25 {q[1]:.0f} / median {q[2]:.0f} / q75 {q[3]:.0f} "
            f"/ max {q[4]:.0f}")
    lines.append(
        f"features ever used: {stats.n_ever_used} of {d}; used by every task: "
        f"{stats.n_always_used}; never used: {d - stats.n_ever_used}")
    if t and stats.n_ever_used:
        top = stats.usage[stats.order]
        k = max(1, int(round(0.1 * stats.n_ever_used)))
        share = top[:k].sum() / max(top.sum(), 1e-12)
        lines.append(f"the top 10% of used features ({k}) account for "
                     f"{100 * share:.1f}% of all (task, feature) activations")
    lines.append(f"mean pairwise Jaccard overlap of active sets: {stats.mean_jaccard:.3f}")
    co = stats.class_overlap
    if co is not None:
        lines.append(
            f"tasks sharing >=1 class: mean Jaccard {co['share_mean']:.3f} "
            f"({co['share_pairs']} pairs); sharing none: {co['none_mean']:.3f} "
            f"({co['none_pairs']} pairs)")
    return "\n".join(lines)
