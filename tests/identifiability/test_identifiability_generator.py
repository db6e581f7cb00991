"""The synthetic task generator: determinism, shapes, and tasks that depend on their subset only."""

import numpy as np
import pytest
import torch

from fewshot_sparse.errors import ConfigError
from fewshot_sparse.identifiability.generator import SyntheticTaskGenerator, latent_covariance


def _lsq_accuracy(z_train, y_train, z_test, y_test, n_way):
    """Least-squares one-hot linear classifier (with intercept)."""
    a = np.c_[z_train, np.ones(len(z_train))]
    coef = np.linalg.lstsq(a, np.eye(n_way)[y_train], rcond=None)[0]
    pred = np.argmax(np.c_[z_test, np.ones(len(z_test))] @ coef, 1)
    return float((pred == y_test).mean())


def test_tasks_depend_only_on_their_factor_subset():
    gen = SyntheticTaskGenerator(m=8, k=2, n_way=3, n_shot=100, n_query=100, seed=3)
    batch, lat = gen.test_tasks(6, return_latents=True)
    ys, yq = batch.support_labels.numpy(), batch.query_labels.numpy()
    on, off = [], []
    for t in range(6):
        s = lat.subsets[t]
        rest = np.setdiff1d(np.arange(8), s)
        assert np.array_equal(np.flatnonzero(batch.factors[t].numpy()), s)
        on.append(_lsq_accuracy(lat.support_z[t][:, s], ys[t], lat.query_z[t][:, s], yq[t], 3))
        off.append(_lsq_accuracy(lat.support_z[t][:, rest], ys[t], lat.query_z[t][:, rest], yq[t], 3))
        # the rule itself labels every point correctly from z_S alone
        pred = np.argmax(lat.query_z[t][:, s] @ lat.weights[t] + lat.biases[t], 1)
        assert np.array_equal(pred, yq[t])
    assert np.mean(on) > 0.85
    assert np.mean(off) < 0.45  # chance is 1/3


def test_same_seed_same_tasks_and_streams_apart():
    a = SyntheticTaskGenerator(m=6, k=2, seed=1, noise=0.1)
    b = SyntheticTaskGenerator(m=6, k=2, seed=1, noise=0.1)
    ta, tb = a.test_tasks(4), b.test_tasks(4)
    for name in ("support_images", "query_images", "support_labels", "factors"):
        assert torch.equal(getattr(ta, name), getattr(tb, name))
    assert torch.equal(next(a.train_stream(3, seed=5)).support_images,
                       next(b.train_stream(3, seed=5)).support_images)
    assert not torch.equal(next(a.train_stream(4)).support_images, ta.support_images)
    za, xa = a.sample_points(100)
    zb, xb = b.sample_points(100)
    assert torch.equal(za, zb) and torch.equal(xa, xb)
    c = SyntheticTaskGenerator(m=6, k=2, seed=2, noise=0.1)
    assert not torch.equal(c.test_tasks(4).support_images, ta.support_images)


def test_shapes_labels_and_balance():
    gen = SyntheticTaskGenerator(m=10, k=3, n_way=5, n_shot=2, n_query=4, obs_dim=16,
                                 mixing_depth=3, correlation=0.6, latent="uniform", seed=0)
    batch = next(gen.train_stream(7))
    assert batch.support_images.shape == (7, 10, 16)
    assert batch.query_images.shape == (7, 20, 16)
    assert batch.factors.shape == (7, 10) and batch.factors.dtype == torch.bool
    assert (batch.factors.sum(1) == 3).all()
    assert (torch.bincount(batch.support_labels[0], minlength=5) == 2).all()
    assert (torch.bincount(batch.query_labels[0], minlength=5) == 4).all()
    assert batch.n_way == 5 and batch.n_shot == 2 and batch.n_query == 4
    z, x = gen.sample_points(3000)
    assert abs(float(z.abs().max()) - np.sqrt(3)) < 0.01  # uniform marginals
    assert torch.isfinite(x).all() and x.shape == (3000, 16)


def test_mixing_is_nonlinear_but_injective():
    gen = SyntheticTaskGenerator(m=6, k=2, mixing_depth=3, seed=0)
    z, x = gen.sample_points(4000)
    z, x = z.double().numpy(), x.double().numpy()
    a = np.c_[x, np.ones(len(x))]
    resid = z - a @ np.linalg.lstsq(a, z, rcond=None)[0]
    r2 = 1 - resid.var(0) / z.var(0)
    assert r2.mean() < 0.97  # not a linear map of z
    # distinct z -> distinct x (leaky ReLU layers with full-rank weights)
    d = np.linalg.norm(x[:200, None] - x[None, :200], axis=-1) + np.eye(200)
    assert d.min() > 1e-6


def test_covariances_and_bad_settings():
    t = latent_covariance(4, 0.5)
    assert t[0, 3] == pytest.approx(0.125)
    e = latent_covariance(4, 0.3, "equicorrelation")
    assert e[0, 3] == pytest.approx(0.3) and e[2, 2] == 1.0
    with pytest.raises(ConfigError):
        latent_covariance(4, 1.0)
    with pytest.raises(ConfigError):
        SyntheticTaskGenerator(m=4, k=5)
    with pytest.raises(ConfigError):
        SyntheticTaskGenerator(m=4, k=2, obs_dim=3)
    with pytest.raises(ConfigError):
        SyntheticTaskGenerator(m=4, k=2, latent="cauchy")
