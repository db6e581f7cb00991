"""Feature-usage statistics against hand-computed tiny examples."""

import numpy as np
import pytest
import torch

from fewshot_sparse.analysis import (
    active_counts,
    compute_feature_usage,
    jaccard_matrix,
    mean_jaccard,
    shared_class_overlap,
    summary_text,
    usage_counts,
    usage_frequency,
    usage_order,
    usage_per_class,
)
from fewshot_sparse.errors import FewshotSparseError

# 4 tasks x 5 features
ACTIVE = np.array([
    [1, 1, 0, 0, 0],   # {0,1}
    [1, 0, 1, 0, 0],   # {0,2}
    [1, 1, 0, 0, 0],   # {0,1}
    [0, 0, 0, 0, 1],   # {4}
], dtype=bool)
# 2-way tasks; tasks 0 and 2 share class 3, tasks 1 and 3 share class 7
CLASSES = np.array([[3, 1], [7, 2], [3, 5], [7, 0]])


def test_counts_and_usage():
    assert active_counts(ACTIVE).tolist() == [2, 2, 2, 1]
    assert usage_counts(ACTIVE).tolist() == [3, 2, 1, 0, 1]
    np.testing.assert_allclose(usage_frequency(ACTIVE), [0.75, 0.5, 0.25, 0.0, 0.25])
    # decreasing usage, ties by lower index
    assert usage_order(ACTIVE).tolist() == [0, 1, 2, 4, 3]


def test_accepts_torch_tensors():
    assert active_counts(torch.from_numpy(ACTIVE)).tolist() == [2, 2, 2, 1]


def test_jaccard_by_hand():
    jac = jaccard_matrix(ACTIVE)
    expected = np.array([
        [1, 1 / 3, 1, 0],
        [1 / 3, 1, 1 / 3, 0],
        [1, 1 / 3, 1, 0],
        [0, 0, 0, 1],
    ])
    np.testing.assert_allclose(jac, expected)
    # distinct pairs: (0,1) 1/3, (0,2) 1, (0,3) 0, (1,2) 1/3, (1,3) 0, (2,3) 0
    assert mean_jaccard(jac) == pytest.approx((1 / 3 + 1 + 1 / 3) / 6)


def test_jaccard_empty_sets_are_nan_and_skipped():
    a = np.array([[0, 0, 0], [0, 0, 0], [1, 0, 0]], dtype=bool)
    jac = jaccard_matrix(a)
    assert np.isnan(jac[0, 1]) and np.isnan(jac[0, 0])
    assert jac[0, 2] == 0.0 and jac[2, 2] == 1.0
    assert mean_jaccard(jac) == 0.0  # only the two defined pairs (0,2), (1,2)


def test_shared_class_overlap_by_hand():
    out = shared_class_overlap(jaccard_matrix(ACTIVE), CLASSES)
    # sharing: (0,2) -> 1, (1,3) -> 0 ; none: (0,1) 1/3, (0,3) 0, (1,2) 1/3, (2,3) 0
    assert out["share_pairs"] == 2 and out["none_pairs"] == 4
    assert out["share_mean"] == pytest.approx(0.5)
    assert out["none_mean"] == pytest.approx((2 / 3) / 4)


def test_usage_per_class_by_hand():
    tasks, usage = usage_per_class(ACTIVE, CLASSES)
    assert usage.shape == (8, 5)
    assert tasks.tolist() == [1, 1, 1, 2, 0, 1, 0, 2]
    np.testing.assert_allclose(usage[3], [1, 1, 0, 0, 0])          # tasks 0 and 2
    np.testing.assert_allclose(usage[7], [0.5, 0, 0.5, 0, 0.5])    # tasks 1 and 3
    np.testing.assert_allclose(usage[4], 0)                        # never seen


def test_compute_feature_usage_bundle():
    norms = ACTIVE * 2.0
    stats = compute_feature_usage(ACTIVE, norms, CLASSES, meta={"way": 2, "shot": 1})
    assert stats.n_tasks == 4 and stats.n_features == 5
    assert stats.n_ever_used == 4 and stats.n_always_used == 0
    assert stats.class_overlap["share_pairs"] == 2
    text = summary_text(stats)
    assert "4 tasks, 5 features" in text and "Jaccard" in text


def test_bad_shapes_raise_clear_errors():
    with pytest.raises(FewshotSparseError):
        active_counts(np.zeros(3, dtype=bool))
    with pytest.raises(FewshotSparseError):
        compute_feature_usage(ACTIVE, np.zeros((4, 3)))
    with pytest.raises(FewshotSparseError):
        shared_class_overlap(jaccard_matrix(ACTIVE), CLASSES[:2])
