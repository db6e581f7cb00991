"""Parts of the interior-point iteration written for fewer operations (docs/benchmarks.md,
"Fewer kernels an iteration"), each against a plain reference: X U against a float64
matmul, the step to the boundary against its entry-by-entry definition, and the
iteration's evaluation against the dual's own gap and gradient (block soft-threshold)."""

import pytest
import torch

from fewshot_sparse.solvers.group_lasso_dual import dual_gradient, duality_gap, feature_products
from fewshot_sparse.solvers.ipm_groups import central_pairs
from fewshot_sparse.solvers.ipm_iteration import Bounds, Options, evaluate
from tasks import lambda1_all_off, relu_task

F64 = torch.float64


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("transposed_u", [False, True])
def test_feature_products_is_x_times_u(dtype, transposed_u):
    g = torch.Generator().manual_seed(5)
    X = torch.randn(3, 7, 50, generator=g, dtype=F64)
    U = torch.randn(3, 4, 50, generator=g, dtype=F64).transpose(1, 2) if transposed_u else torch.randn(3, 50, 4, generator=g, dtype=F64)
    got = feature_products(X.to(dtype), U.to(dtype))
    assert got.shape == (3, 7, 4) and got.dtype == dtype
    tol = 1e-12 if dtype == F64 else 1e-5
    torch.testing.assert_close(got.double(), X @ U, rtol=tol, atol=tol)


def _max_step_by_entry(x, dx, fraction):
    """max alpha in [0, 1] with x + alpha dx >= (1 - fraction) x, entry by entry (x > 0)."""
    alpha = 1.0
    for xi, di in zip(x.tolist(), dx.tolist()):
        if di < 0:
            alpha = min(alpha, fraction * xi / -di)
    return alpha


@pytest.mark.parametrize("with_pairs", [False, True])
def test_bounds_give_the_largest_step_to_the_boundary(with_pairs):
    g = torch.Generator().manual_seed(9)
    B, S, W, D = 4, 5, 3, 6
    beta, z = torch.rand(B, S, W, generator=g, dtype=F64) + 1e-3, torch.rand(B, S, W, generator=g, dtype=F64) + 1e-3
    db, dz = torch.randn(B, S, W, generator=g, dtype=F64), torch.randn(B, S, W, generator=g, dtype=F64)
    db[0], dz[0] = db[0].abs(), dz[0].abs()  # task 0 only grows: the full step
    pairs = dp = dq = None
    if with_pairs:
        p, q = torch.rand(B, D, generator=g, dtype=F64) + 1e-3, torch.rand(B, D, generator=g, dtype=F64) + 1e-3
        pairs = type("Pairs", (), {"p": p, "q": q})()
        dp, dq = torch.randn(B, D, generator=g, dtype=F64), torch.randn(B, D, generator=g, dtype=F64)
        dp[0], dq[0] = dp[0].abs(), dq[0].abs()
    bounds = Bounds(beta, z, pairs)
    for fraction in (1.0, 0.995):
        got = bounds.max_step(db, dz, fraction, dp, dq)
        assert got.shape == (B, 1, 1)
        for b in range(B):
            parts = [beta[b], z[b]] + ([pairs.p[b], pairs.q[b]] if with_pairs else [])
            steps = [db[b], dz[b]] + ([dp[b], dq[b]] if with_pairs else [])
            x, dx = torch.cat([t.reshape(-1) for t in parts]), torch.cat([t.reshape(-1) for t in steps])
            assert float(got[b]) == pytest.approx(_max_step_by_entry(x, dx, fraction), rel=1e-12)
    assert float(bounds.max_step(db, dz, 1.0, dp, dq)[0]) == 1.0


def test_the_evaluation_matches_the_duals_gap_and_gradient():
    """A batch with a lambda1 = 0 task beside lambda1 > 0 ones and a zero feature column
    (V_j = 0): the gap and gradient from the row norms against duality_gap and
    dual_gradient, which shrink V by the block soft-threshold."""
    S, D, W = 12, 20, 4
    X, Y = relu_task(17, S, D, W, batch=3)
    X[:, :, 3] = 0.0
    l1 = (lambda1_all_off(X, Y) * torch.tensor([0.0, 0.3, 0.8], dtype=F64))[:, None, None]
    l2 = torch.full((3, 1, 1), 0.7, dtype=F64)
    g = torch.Generator().manual_seed(17)
    beta = torch.softmax(torch.randn(3, S, W, generator=g, dtype=F64), -1)
    for s in (0.0, 1.0):
        c = dict(X=X, Y=Y, l1=l1, l2=l2, l1x=l1)
        V = X.transpose(1, 2) @ (Y - beta)
        excess, _ = central_pairs(V.norm(dim=-1), l1, l2, torch.full((3, 1, 1), 1e-3, dtype=F64))
        grad, gaps, V_got, n, _ = evaluate(c, Options(smooth=True, sync_free=False, smoothing=s), beta, excess)
        torch.testing.assert_close(V_got, V, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(n, V.norm(dim=-1), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(grad, dual_gradient(X, Y, beta, l1, l2, s), rtol=1e-12, atol=1e-12)
        for got, want in zip(gaps, duality_gap(X, Y, beta, l1, l2, s)):
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
