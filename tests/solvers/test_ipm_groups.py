"""The group pairs of the interior-point solver (solvers/ipm_groups.py, docs/math.md 6):
their eliminated Newton step against the full Newton system of the perturbed KKT
conditions in (beta, nu, z, p, q), differentiated by autograd and solved densely; their
start on the central path; and the weak-regularisation regime they were built for."""

import pytest
import torch

from fewshot_sparse.solvers.dual_hessian import hessian_factors
from fewshot_sparse.solvers.group_lasso_svm import GroupLassoSVMDual
from fewshot_sparse.solvers.ipm_groups import GroupPairs, central_pairs
from fewshot_sparse.solvers.ipm_systems import NullSpaceSystem
from tasks import lambda1_all_off, relu_task

F64 = torch.float64


def _kkt(X, Y, l1, l2, x, sizes, target):
    """The perturbed KKT residuals at x = (beta, nu, z, p, q) flattened, one task (s = 0):
    dual residual with the model's weights W_j = p_j vhat_j / lambda2, row sums, the
    complementarities beta z and p q / lambda2 (minus target), the pairs' constraint."""
    beta, nu, z, p, q = torch.split(x, sizes)
    S, W = Y.shape
    beta, z = beta.reshape(S, W), z.reshape(S, W)
    V = X.T @ (Y - beta)
    t = V.norm(dim=-1)
    Wm = (p / t)[:, None] * V / l2
    r_d = Y - X @ Wm + nu[:, None] - z
    return torch.cat([r_d.reshape(-1), beta.sum(-1) - 1.0, (beta * z).reshape(-1) - target,
                      t + q - l1 - p, p * q / l2 - target])


@pytest.mark.parametrize("sigma_mu", [0.0, 1e-3])
def test_the_eliminated_step_solves_the_full_newton_system(sigma_mu):
    S, D, W = 6, 4, 3
    X, Y = relu_task(81, S, D, W, batch=1)
    X, Y = X[0] + 0.5, Y[0]  # every group well above its threshold: no curvature folded
    g = torch.Generator().manual_seed(81)
    beta = torch.softmax(torch.randn(S, W, generator=g, dtype=F64), -1)
    z = torch.rand(S, W, generator=g, dtype=F64) + 0.1
    nu = torch.randn(S, generator=g, dtype=F64)
    t = (X.T @ (Y - beta)).norm(dim=-1)
    l1, l2 = 0.3 * float(t.min()), 0.7
    p = (t - l1) * (1.0 + 0.1 * torch.rand(D, generator=g, dtype=F64))  # off the constraint: r_p != 0
    q = 0.01 * p
    x = torch.cat([beta.reshape(-1), nu, z.reshape(-1), p, q])
    sizes = [S * W, S, S * W, D, D]
    kkt = lambda v: _kkt(X, Y, l1, l2, v, sizes, sigma_mu)  # noqa: E731
    J = torch.autograd.functional.jacobian(kkt, x)
    want = torch.split(torch.linalg.solve(J, -kkt(x)), sizes)

    Xb, Yb, bb, zb = X[None], Y[None], beta[None], z[None]
    l1t, l2t = torch.full((1, 1, 1), l1, dtype=F64), torch.full((1, 1, 1), l2, dtype=F64)
    V = Xb.transpose(1, 2) @ (Yb - bb)
    pairs = GroupPairs(Xb, V, V.norm(dim=-1), p[None], q[None], l1t, l2t, torch.ones(1, 1, dtype=F64))
    factors = hessian_factors(Xb, Yb, bb, l1t, l2t, 0.0, V=V, pairs=(p[None], q[None]))
    assert factors.Xg is not None and factors.Xg.shape[-1] == D  # every group rank-one
    system = NullSpaceSystem(factors, zb / bb, torch.full((1, 1, 1), 0.0, dtype=F64))
    Wm = (p / t)[:, None] * V[0] / l2
    r_dual = (Y - X @ Wm + nu[:, None] - z)[None]
    r_comp = bb * zb - sigma_mu
    R = p[None] * q[None] - l2 * sigma_mu
    d_beta, d_nu = system.solve(-r_dual - r_comp / bb + pairs.rhs(R))
    dp, dq = pairs.steps(d_beta, R)
    dz = -(r_comp + zb * d_beta) / bb
    for got, ref in ((d_beta, want[0]), (d_nu, want[1]), (dz, want[2]), (dp, want[3]), (dq, want[4])):
        torch.testing.assert_close(got.reshape(-1), ref, rtol=1e-8, atol=1e-10)


def test_pairs_start_on_their_central_path():
    X, Y = relu_task(82, 10, 30, 4, batch=2)
    V = X.transpose(1, 2) @ (Y - 0.25)
    l1 = (0.5 * lambda1_all_off(X, Y)).reshape(2, 1, 1)
    l2 = torch.tensor([0.1, 3.0], dtype=F64).reshape(2, 1, 1)
    mu = torch.tensor([1e-2, 1e-6], dtype=F64).reshape(2, 1, 1)
    p, q = central_pairs(V.norm(dim=-1), l1, l2, mu)
    assert (p > 0).all() and (q > 0).all()
    torch.testing.assert_close(p * q / l2[:, :, 0], mu[:, :, 0].expand_as(p), rtol=1e-9, atol=0)
    torch.testing.assert_close(V.norm(dim=-1) + q - l1[:, :, 0] - p, torch.zeros_like(p), rtol=0, atol=1e-12)


def test_iterations_stay_flat_as_lambda2_falls():
    """lambda2 / mean ||x||^2 from 3e-4 down to 3e-6 (float64, lambda1 = 0.2 x the all-off
    bound): with the group pairs every task converges in a few dozen iterations; the
    smoothed model they replaced needed 19-20, 33-37 and 77-78 here."""
    X, Y = relu_task(71, 75, 256, 5, batch=2)
    sq = float((X * X).sum(-1).mean())
    for ratio in (3e-4, 3e-5, 3e-6):
        _, info = GroupLassoSVMDual(tol=1e-4, max_iter=100).run(X, Y, 0.2 * lambda1_all_off(X, Y), ratio * sq)
        assert info.converged.all() and (info.iterations <= 30).all(), (ratio, info.summary())
