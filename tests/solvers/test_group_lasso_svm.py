"""The batched dual solver against an independent CVXPY/Clarabel primal (float64)."""

import cvxpy as cp
import numpy as np
import pytest
import torch

from fewshot_sparse.solvers.group_lasso_dual import dual_objective, dual_weights, primal_objective
from fewshot_sparse.solvers.group_lasso_svm import GroupLassoSVMDual
from solver_checks import check_against_cvxpy
from tasks import lambda1_all_off, make_task

@pytest.mark.reference
@pytest.mark.parametrize("lambda2", [0.1, 1.0, 10.0])
@pytest.mark.parametrize("seed", range(4))
def test_solver_matches_cvxpy(seed, lambda2):
    rng = np.random.default_rng(seed)
    W = int(rng.integers(2, 6))
    S = int(rng.integers(W, 26))
    D = int(rng.integers(2, 41))
    X, Y = make_task(seed, S, D, W, batch=4)
    off = lambda1_all_off(X, Y)
    # four tasks, four regimes in one batch: plain CS, mildly / strongly sparse, all off
    l1 = torch.stack([torch.tensor(0.0), 0.1 * off[1], 0.5 * off[2], off[3]])
    check_against_cvxpy(X, Y, l1, torch.tensor(lambda2))


@pytest.mark.reference
@pytest.mark.parametrize("smoothing", [0.5, 1.0])
@pytest.mark.parametrize("lambda2", [0.1, 1.0, 10.0])
def test_smoothed_solver_matches_cvxpy(smoothing, lambda2):
    X, Y = make_task(7, 12, 15, 4, batch=3)
    off = lambda1_all_off(X, Y)
    l1 = torch.stack([torch.tensor(0.0), 0.3 * off[1], 0.6 * off[2]])
    check_against_cvxpy(X, Y, l1, lambda2, smoothing=smoothing)


@pytest.mark.reference
def test_smoothing_one_reproduces_metaoptnet_qp():
    """s = 1, lambda1 = 0 is MetaOptNet's SVM-CS QP: min 1/2 z^T (K kron I + I) z - <Y, z>
    s.t. z <= C Y, sum_c z_ic = 0, with w = X^T z and C = 1 / lambda2."""
    X, Y = make_task(11, 10, 8, 3)
    lambda2 = 0.5
    beta, _ = GroupLassoSVMDual(tol=1e-12, max_iter=50000, smoothing=1.0).run(X, Y, 0.0, lambda2)
    Wt = dual_weights(X, Y, beta, 0.0, lambda2)[0].numpy()
    Xn, Yn, C = X[0].numpy(), Y[0].numpy(), 1.0 / lambda2
    z = cp.Variable(Yn.shape)
    obj = 0.5 * cp.sum_squares(Xn.T @ z) + 0.5 * cp.sum_squares(z) - cp.sum(cp.multiply(Yn, z))
    cp.Problem(cp.Minimize(obj), [z <= C * Yn, cp.sum(z, axis=1) == 0]).solve(
        solver=cp.CLARABEL, tol_gap_abs=1e-11, tol_gap_rel=1e-11, tol_feas=1e-11
    )
    np.testing.assert_allclose(Wt, Xn.T @ z.value, atol=1e-6)


@pytest.mark.reference
def test_one_shot():
    X, Y = make_task(3, 5, 20, 5, batch=2)  # S = W: one example per class
    off = lambda1_all_off(X, Y)
    check_against_cvxpy(X, Y, torch.stack([torch.tensor(0.0), 0.4 * off[1]]), 1.0)


@pytest.mark.reference
def test_duplicated_support_points():
    X, Y = make_task(4, 8, 10, 3, batch=2)
    X = torch.cat([X, X[:, :3]], 1)  # three support points appear twice, same labels
    Y = torch.cat([Y, Y[:, :3]], 1)
    off = lambda1_all_off(X, Y)
    check_against_cvxpy(X, Y, torch.stack([torch.tensor(0.0), 0.3 * off[1]]), 1.0)


def test_all_features_off_gives_exact_zero():
    X, Y = make_task(5, 15, 30, 5, batch=3)
    l1 = lambda1_all_off(X, Y) * torch.tensor([1.0, 2.0, 100.0])
    beta, info = GroupLassoSVMDual(tol=1e-9).run(X, Y, l1, 1.0)
    W = dual_weights(X, Y, beta, l1, 1.0)
    assert info.converged.all()
    assert (W == 0).all()
    torch.testing.assert_close(info.primal, torch.full((3,), 15.0))  # P(0) = S


def test_non_convergence_is_reported():
    X, Y = make_task(6, 20, 30, 5, batch=2)
    beta, info = GroupLassoSVMDual(tol=1e-9, max_iter=3, check_every=10).run(X, Y, 1.0, 1.0)
    assert not info.converged.any()
    assert not info.all_converged
    assert (info.iterations == 3).all()
    assert (info.gap > 1e-9).all()
    # the report is the true gap of the returned point
    W = dual_weights(X, Y, beta, 1.0, 1.0)
    p, d = primal_objective(X, Y, W, 1.0, 1.0), dual_objective(X, Y, beta, 1.0, 1.0)
    torch.testing.assert_close(info.gap, (p - d) / p.abs().clamp_min(1.0))
    assert "0/2 tasks converged" in info.summary()


def test_tasks_stop_independently_and_match_solo_solves():
    X, Y = make_task(8, 15, 25, 4, batch=3)
    l1 = torch.tensor([0.0, 2.0, 1000.0])  # easy, hard, trivial (all off)
    solver = GroupLassoSVMDual(tol=1e-10, max_iter=20000)
    beta, info = solver.run(X, Y, l1, 0.5)
    assert info.converged.all()
    assert len(set(info.iterations.tolist())) > 1  # they did stop at different iterations
    for b in range(3):
        beta_b, info_b = solver.run(X[b : b + 1], Y[b : b + 1], l1[b], 0.5)
        assert int(info_b.iterations[0]) == int(info.iterations[b])
        # the weights: the all-off task's dual solution is not unique (any beta with
        # ||x_j^T (Y - beta)|| <= lambda1 for all j), and round-off that depends on the
        # batch (the padding of the gathered groups) picks another one
        torch.testing.assert_close(dual_weights(X[b : b + 1], Y[b : b + 1], beta_b, l1[b], 0.5),
                                   dual_weights(X[b : b + 1], Y[b : b + 1], beta[b : b + 1], l1[b], 0.5), atol=1e-12, rtol=0)
        if b < 2:
            torch.testing.assert_close(beta_b[0], beta[b], atol=1e-12, rtol=0)


def test_warm_start_at_the_solution_stops_immediately():
    X, Y = make_task(9, 12, 20, 3, batch=2)
    solver = GroupLassoSVMDual(tol=1e-8)
    beta, info = solver.run(X, Y, 0.5, 1.0)
    beta2, info2 = solver.run(X, Y, 0.5, 1.0, beta0=beta)
    assert (info2.iterations == 0).all() and info2.converged.all()
    torch.testing.assert_close(beta2, beta)


def test_float32_and_dtype_device_follow_inputs():
    X, Y = make_task(10, 25, 64, 5, batch=4)
    X, Y = X.float(), Y.float()
    l1 = torch.tensor([0.0, 0.5, 2.0, 5.0])
    beta, info = GroupLassoSVMDual(tol=1e-4).run(X, Y, l1, 1.0)
    # the interior point hands back its float64 iterate (Y - beta keeps its digits)
    assert beta.dtype == torch.float64 and info.gap.dtype == torch.float32
    assert info.converged.all(), info.summary()
    beta_f, info_f = GroupLassoSVMDual(tol=1e-4, method="fista", max_iter=20000).run(X, Y, l1, 1.0)
    assert beta_f.dtype == info_f.gap.dtype == torch.float32


def test_without_polish_plain_fista_converges_too():
    X, Y = make_task(12, 15, 20, 4, batch=2)
    solver = GroupLassoSVMDual(tol=1e-8, max_iter=50000, polish=False, method="fista")
    beta, info = solver.run(X, Y, torch.tensor([0.0, 1.0]), 1.0)
    assert info.converged.all()
    beta_p, _ = GroupLassoSVMDual(tol=1e-12, max_iter=50000).run(X, Y, torch.tensor([0.0, 1.0]), 1.0)
    W, Wp = dual_weights(X, Y, beta, torch.tensor([0.0, 1.0]), 1.0), dual_weights(X, Y, beta_p, torch.tensor([0.0, 1.0]), 1.0)
    torch.testing.assert_close(W, Wp, atol=1e-3, rtol=0)


def test_bad_inputs_are_refused():
    X, Y = make_task(0, 6, 4, 3)
    solver = GroupLassoSVMDual()
    with pytest.raises(ValueError):
        solver.run(X[0], Y[0], 0.1, 1.0)
    with pytest.raises(ValueError):
        solver.run(X, Y[:, :5], 0.1, 1.0)
    for method in ("ipm", "fista"):
        for l1, l2 in ((0.1, 0.0), (-1.0, 1.0), (float("nan"), 1.0), (0.1, float("inf"))):
            with pytest.raises(ValueError, match="finite lambda2 > 0 and lambda1 >= 0"):
                GroupLassoSVMDual(method=method).run(X, Y, l1, l2)
    with pytest.raises(ValueError):
        solver.run(X, Y, torch.tensor([0.1, 0.2]), 1.0)
    with pytest.raises(ValueError):
        solver.run(X, Y.float(), 0.1, 1.0)
    with pytest.raises(ValueError):
        GroupLassoSVMDual(check_every=0)
