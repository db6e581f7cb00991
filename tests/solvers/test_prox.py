"""Simplex projection and block soft-threshold against independent references."""

import cvxpy as cp
import numpy as np
import pytest
import torch

from fewshot_sparse.solvers.prox import block_soft_threshold, project_rows_to_simplex, reciprocal_or_zero, row_norms


def _cvx_simplex(z):
    b = cp.Variable(z.shape[0])
    cp.Problem(cp.Minimize(cp.sum_squares(b - z)), [b >= 0, cp.sum(b) == 1]).solve(
        solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12
    )
    return b.value


@pytest.mark.reference
@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
def test_simplex_projection_matches_cvxpy(n):
    g = torch.Generator().manual_seed(n)
    z = 2.0 * torch.randn(6, n, generator=g)
    z[0] = 0.0  # ties
    z[1] = torch.full((n,), 5.0)  # all equal, far from the simplex
    p = project_rows_to_simplex(z)
    for i in range(z.shape[0]):
        np.testing.assert_allclose(p[i].numpy(), _cvx_simplex(z[i].numpy()), atol=1e-7)


def test_simplex_projection_properties_and_batching():
    g = torch.Generator().manual_seed(0)
    z = 3.0 * torch.randn(2, 3, 4, 5, generator=g)
    p = project_rows_to_simplex(z)
    assert p.shape == z.shape
    assert (p >= 0).all()
    torch.testing.assert_close(p.sum(-1), torch.ones(2, 3, 4))
    torch.testing.assert_close(project_rows_to_simplex(p), p)  # idempotent
    # a point inside the simplex is its own projection; a vertex direction gives the vertex
    inside = torch.tensor([[0.2, 0.3, 0.5]])
    torch.testing.assert_close(project_rows_to_simplex(inside), inside)
    torch.testing.assert_close(project_rows_to_simplex(torch.tensor([[0.0, 10.0, 0.0]])), torch.tensor([[0.0, 1.0, 0.0]]))
    # KKT of the projection: p = max(z - theta, 0) with one theta per row
    theta = (z - p)[p > 0]
    assert torch.isfinite(theta).all()
    assert p.dtype == z.dtype and project_rows_to_simplex(z.float()).dtype == torch.float32


def test_simplex_projection_gradient():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(4, 5, generator=g).requires_grad_()
    assert torch.autograd.gradcheck(project_rows_to_simplex, (z,))


def _bst_reference(v, lam):
    out = np.zeros_like(v)
    for j in range(v.shape[0]):
        nrm = np.linalg.norm(v[j])
        if nrm > lam:
            out[j] = (1 - lam / nrm) * v[j]
    return out


@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0, 10.0])
def test_block_soft_threshold_closed_form(lam):
    g = torch.Generator().manual_seed(2)
    v = torch.randn(7, 4, generator=g)
    v[2] = 0.0
    out = block_soft_threshold(v, torch.tensor(lam))
    np.testing.assert_allclose(out.numpy(), _bst_reference(v.numpy(), lam), atol=1e-14)


def test_block_soft_threshold_batched_lambda():
    g = torch.Generator().manual_seed(3)
    v = torch.randn(3, 6, 4, generator=g)
    lam = torch.tensor([0.0, 1.0, 100.0]).reshape(3, 1, 1)
    out = block_soft_threshold(v, lam)
    for b in range(3):
        np.testing.assert_allclose(out[b].numpy(), _bst_reference(v[b].numpy(), float(lam[b])), atol=1e-14)
    assert (out[2] == 0).all()


@pytest.mark.parametrize("lam", [0.0, 0.5])
def test_block_soft_threshold_zero_rows_have_finite_gradients(lam):
    v = torch.zeros(3, 4)
    v[1] = torch.tensor([1.0, -2.0, 0.5, 0.0])
    v.requires_grad_()
    lam_t = torch.tensor(lam, requires_grad=True)
    out = block_soft_threshold(v, lam_t)
    (out * torch.arange(12.0).reshape(3, 4)).sum().backward()
    assert torch.isfinite(v.grad).all() and torch.isfinite(lam_t.grad)
    expected_zero_row = torch.arange(4.0) if lam == 0 else torch.zeros(4)  # identity vs dead zone
    torch.testing.assert_close(v.grad[0], expected_zero_row)


def test_block_soft_threshold_gradcheck():
    g = torch.Generator().manual_seed(4)
    v = torch.randn(5, 3, generator=g).requires_grad_()
    lam = torch.tensor(0.7, requires_grad=True)
    assert torch.autograd.gradcheck(block_soft_threshold, (v, lam))


def test_row_norms_and_their_reciprocals_at_zero_rows():
    v = torch.tensor([[3.0, 4.0], [0.0, 0.0], [float("nan"), 1.0]], dtype=torch.float64)
    n = row_norms(v)
    assert n[0] == 5.0 and n[1] == 0.0 and n[2].isnan()
    r = reciprocal_or_zero(n)
    assert r[0] == 0.2 and r[1] == 0.0 and r[2].isnan()  # a NaN stays visible
