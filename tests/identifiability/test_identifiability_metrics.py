"""Identifiability metrics on features whose relation to the factors is known."""

import numpy as np
import pytest
import torch

from fewshot_sparse.identifiability.metrics import (
    correlation_matrix, dci, linear_r2, mcc, support_agreement)


def _factors(n=4000, m=6, seed=0):
    return np.random.default_rng(seed).standard_normal((n, m))


def test_mcc_permutation_and_rescaling_is_one():
    z = _factors()
    perm = np.array([3, 0, 5, 1, 4, 2])
    scale = np.array([2.0, -0.5, 3.0, -1.0, 10.0, 0.1])
    f = z[:, perm] * scale + 7.0
    res = mcc(f, z)
    assert res.score == pytest.approx(1.0, abs=1e-9)
    # feature_of_factor inverts the permutation
    assert np.array_equal(perm[res.feature_of_factor], np.arange(6))
    assert mcc(torch.from_numpy(f), torch.from_numpy(z), method="spearman").score == pytest.approx(1.0)


def test_spearman_sees_through_monotone_maps():
    z = _factors()
    f = z ** 3 + np.tanh(z)  # strictly increasing, not linear
    assert mcc(f, z, method="spearman").score == pytest.approx(1.0, abs=1e-9)
    assert mcc(f, z, method="pearson").score < 0.99


def test_rotation_lowers_mcc_but_keeps_linear_r2():
    z = _factors()
    q, _ = np.linalg.qr(np.random.default_rng(1).standard_normal((6, 6)))
    f = z @ q
    assert mcc(f, z).score < 0.8
    r2, per = linear_r2(f, z)
    assert r2 == pytest.approx(1.0, abs=1e-6) and per.shape == (6,)
    d, c, _ = dci(f, z)
    assert d < 0.7 and c < 0.7


def test_independent_noise_scores_near_zero():
    z = _factors()
    f = np.random.default_rng(2).standard_normal((4000, 6))
    assert mcc(f, z).score < 0.06
    assert linear_r2(f, z)[0] < 0.02


def test_dci_of_identity_is_one():
    z = _factors()
    d, c, r = dci(z, z)
    assert d == pytest.approx(1.0, abs=1e-6) and c == pytest.approx(1.0, abs=1e-6)
    assert r.shape == (6, 6)
    d, c, _ = dci(z[:, ::-1] * 3.0, z, regressor="ridge")
    assert d == pytest.approx(1.0, abs=1e-2) and c == pytest.approx(1.0, abs=1e-2)


def test_extra_and_dead_features():
    """d > m: extra noise or constant features do not spoil MCC; d < m penalises."""
    z = _factors()
    extra = np.c_[z, np.zeros((4000, 2)), np.random.default_rng(3).standard_normal((4000, 2))]
    assert mcc(extra, z).score == pytest.approx(1.0, abs=1e-9)
    d, c, _ = dci(extra, z)
    assert d > 0.95 and c > 0.95
    assert np.isfinite(correlation_matrix(extra, z)).all()
    few = mcc(z[:, :3], z)
    assert few.score == pytest.approx(0.5, abs=1e-9)
    assert (few.feature_of_factor == -1).sum() == 3


def test_support_agreement():
    fof = np.array([2, 0, 1, -1])  # factor j <-> feature fof[j]; factor 3 unmatched
    true = np.array([[1, 1, 0, 0], [0, 0, 1, 1]], bool)
    active = np.array([[1, 0, 1, 0], [0, 1, 0, 0]], bool)  # task 0 exact; task 1: 1 of 2, no FP
    out = support_agreement(active, true, fof)
    assert out["precision"] == pytest.approx(1.0)
    assert out["recall"] == pytest.approx(0.75)
    assert out["jaccard"] == pytest.approx(0.75)
    dense = support_agreement(np.ones((2, 4), bool), true, fof)
    assert dense["recall"] == pytest.approx(0.75) and dense["precision"] == pytest.approx(3 / 8)
    with pytest.raises(ValueError):
        support_agreement(active, true, fof[:2])


def test_bad_inputs():
    with pytest.raises(ValueError):
        mcc(np.ones((5, 2)), np.ones((4, 2)))
    with pytest.raises(ValueError):
        mcc(np.array([[np.nan, 1.0], [1.0, 2.0]]), np.ones((2, 2)))
