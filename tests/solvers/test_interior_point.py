"""The interior-point solver where the first-order one fails: non-negative (ReLU and
backbone) features, rank-deficient and D < S supports, lambda1 near lambda_max, float32.
References are CVXPY/Clarabel solves of the primal (float64) and the exact lambda_max SOCP."""

import pytest
import torch

from cvx_glsvm import lambda1_max, solve_primal
from fewshot_sparse.encoders import build_encoder
from fewshot_sparse.solvers.group_lasso_dual import correlations, dual_weights, kkt_residual, safe_groups
from fewshot_sparse.solvers.dual_hessian import dual_hessian
from fewshot_sparse.solvers.group_lasso_newton import kkt_solve, kkt_solve_factored, kkt_solve_kronecker
from fewshot_sparse.solvers.group_lasso_svm import GroupLassoSVMDual
from solver_checks import check_against_cvxpy
from tasks import lambda1_all_off, make_task, relu_task


@pytest.mark.reference
@pytest.mark.parametrize("smoothing", [0.0, 1.0])
@pytest.mark.parametrize("lambda2", [0.1, 1.0, 10.0])
def test_relu_features_match_cvxpy(lambda2, smoothing):
    X, Y = relu_task(20, 20, 30, 4, batch=3)
    off = lambda1_all_off(X, Y)
    l1 = torch.stack([torch.tensor(0.0), 0.2 * off[1], 0.6 * off[2]])
    check_against_cvxpy(X, Y, l1, lambda2, smoothing, methods=("ipm",))


@pytest.mark.reference
def test_backbone_features_match_cvxpy():
    """Features of a random-init Conv-4 on random images: non-negative, strongly
    correlated, the regime of every real run."""
    g = torch.Generator().manual_seed(3)
    enc = build_encoder("conv4", in_channels=3).double().eval()
    with torch.no_grad():
        for p in enc.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.3)
        X = enc(torch.rand(2 * 15, 3, 32, 32, generator=g, dtype=torch.float64)).reshape(2, 15, -1)
    assert (X >= 0).all() and X.shape[-1] >= 64
    Y = torch.nn.functional.one_hot(torch.arange(15) % 5, 5).double().expand(2, 15, 5).contiguous()
    off = lambda1_all_off(X, Y)
    check_against_cvxpy(X, Y, torch.stack([torch.tensor(0.0), 0.3 * off[1]]), 1.0, methods=("ipm",))


@pytest.mark.reference
def test_rank_deficient_and_fewer_features_than_points():
    g = torch.Generator().manual_seed(5)
    _, Y = make_task(5, 20, 3, 4, batch=2)
    low_rank = torch.randn(2, 20, 3, generator=g, dtype=torch.float64) @ torch.randn(2, 3, 40, generator=g, dtype=torch.float64)
    check_against_cvxpy(low_rank.relu(), Y, torch.tensor([0.0, 0.5]), 1.0, methods=("ipm",))
    X, Y = relu_task(6, 25, 6, 5, batch=2)  # D < S
    check_against_cvxpy(X, Y, torch.tensor([0.0, 0.3]), 0.5, methods=("ipm",))


def test_lambda1_zero_starts_at_the_minimiser_on_the_affine_set():
    """lambda1 = 0 starts from the minimiser of f on {E beta = 1}, shifted into the simplices
    (docs/math.md, 6). Where it has no negative entry (1-shot, strong regularisation) it is
    the solution: no iteration, CVXPY's answer; in a batch with a lambda1 > 0 task too."""
    X, Y = relu_task(7, 5, 640, 5, batch=3)  # 5-way 1-shot
    _, _, info = check_against_cvxpy(X, Y, 0.0, 10.0, methods=("ipm",))
    assert (info.iterations == 0).all()
    l1 = lambda1_all_off(X, Y) * torch.tensor([0.0, 0.0, 0.3], dtype=X.dtype)
    _, _, info = check_against_cvxpy(X, Y, l1, 10.0, methods=("ipm",))
    assert (info.iterations[:2] == 0).all() and info.iterations[2] > 0


@pytest.mark.reference
def test_lambda1_near_lambda_max():
    """Just below the exact lambda_max a task keeps a minority of its features; just
    above it has none. lambda_max comes from an independent SOCP."""
    X, Y = relu_task(7, 15, 40, 5, batch=2)
    lmax = torch.tensor([lambda1_max(X[b].numpy(), Y[b].numpy()) for b in range(2)], dtype=X.dtype)
    solver = GroupLassoSVMDual(tol=1e-9)
    beta, info = solver.run(X, Y, 0.99 * lmax, 1.0)
    assert info.converged.all()
    used = (dual_weights(X, Y, beta, 0.99 * lmax, 1.0).norm(dim=-1) > 0).sum(-1)
    assert ((used >= 1) & (used < 20)).all(), used
    beta, info = solver.run(X, Y, 1.001 * lmax, 1.0)
    assert info.converged.all() and dual_weights(X, Y, beta, 1.001 * lmax, 1.0).abs().max() < 1e-9
    check_against_cvxpy(X, Y, 0.99 * lmax, 1.0, methods=("ipm",))


def test_hard_regimes_take_few_newton_iterations():
    """5-way 15-shot ReLU features, every (lambda1, lambda2, smoothing) regime of the
    solver benchmark: relative gap 1e-6 within 30 Newton iterations in every task (the
    solver issue asks for 50; 15 at most here with the group pairs, 19 before them)."""
    X, Y = relu_task(8, 75, 256, 5, batch=1)
    off = float(lambda1_all_off(X, Y))
    for smoothing in (0.0, 1.0):
        l1 = torch.tensor([0.0, 0.02 * off, 0.5 * off] * 4, dtype=X.dtype)
        l2 = torch.tensor([0.1, 0.1, 0.1, 1.0, 1.0, 1.0, 10.0, 10.0, 10.0, 100.0, 100.0, 100.0], dtype=X.dtype)
        _, info = GroupLassoSVMDual(tol=1e-6, max_iter=50, smoothing=smoothing).run(
            X.expand(12, -1, -1), Y.expand(12, -1, -1), l1, l2)
        assert info.converged.all(), info.summary()
        assert (info.iterations <= 30).all()


def test_float32_agrees_with_float64():
    X, Y = relu_task(9, 25, 200, 5, batch=3)
    l1 = torch.tensor([0.0, 0.1, 0.4]) * lambda1_all_off(X, Y)
    b64, i64 = GroupLassoSVMDual(tol=1e-7).run(X, Y, l1, 1.0)
    b32, i32 = GroupLassoSVMDual(tol=1e-4).run(X.float(), Y.float(), l1.float(), 1.0)
    assert i32.converged.all() and b32.dtype == torch.float64 and i32.gap.dtype == torch.float32
    W64 = dual_weights(X, Y, b64, l1, 1.0)
    W32 = dual_weights(X.float(), Y.float(), b32, l1.float(), 1.0).double()
    # the gap bounds the weight error: (lambda2 / 2) ||W - W*||^2 <= gap * max(|P|, 1)
    bound = (2.0 * (i32.gap.double() * i32.primal.double().abs().clamp_min(1.0)) / 1.0).sqrt()
    err = (W32 - W64).flatten(1).norm(dim=-1)
    assert (err <= bound + 1e-3).all(), (err, bound)


def test_ipm_and_fista_agree_and_report_their_iterations():
    X, Y = make_task(10, 12, 20, 3, batch=2)
    l1 = torch.tensor([0.0, 0.5])
    b_ipm, i_ipm = GroupLassoSVMDual(tol=1e-10).run(X, Y, l1, 1.0)
    b_fista, i_fista = GroupLassoSVMDual(tol=1e-10, method="fista", max_iter=100000).run(X, Y, l1, 1.0)
    assert i_ipm.converged.all() and i_fista.converged.all()
    torch.testing.assert_close(dual_weights(X, Y, b_ipm, l1, 1.0), dual_weights(X, Y, b_fista, l1, 1.0), atol=1e-6, rtol=0)
    assert (i_ipm.iterations < i_fista.iterations).all()


def test_all_zero_features_give_zero_weights():
    X = torch.zeros(2, 10, 8, dtype=torch.float64)
    _, Y = make_task(11, 10, 8, 5, batch=2)
    for l1 in (0.0, 0.5):
        beta, info = GroupLassoSVMDual(tol=1e-9).run(X, Y, l1, 1.0)
        assert info.converged.all() and torch.isfinite(beta).all()
        assert (dual_weights(X, Y, beta, l1, 1.0) == 0).all()
        torch.testing.assert_close(info.primal, torch.full((2,), 10.0, dtype=torch.float64))


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="method"):
        GroupLassoSVMDual(method="newton")


def test_class_block_adjoint_solve_matches_the_dense_projected_form():
    """kkt_solve_kronecker (W blocks of S x S) against kkt_solve on the assembled
    (S W) x (S W) matrix, on a face with several free entries per row."""
    X, Y = relu_task(13, 12, 30, 4, batch=2)
    g = torch.Generator().manual_seed(13)
    free = (torch.rand(2, 12, 4, generator=g) < 0.5) | Y.bool()
    rhs = torch.randn(2, 12, 4, generator=g)
    l2 = torch.tensor([0.5, 2.0]).reshape(2, 1, 1)
    A = X @ X.transpose(1, 2) / l2 + (1.0 / l2) * torch.eye(12)
    H = torch.kron(A[0], torch.eye(4)), torch.kron(A[1], torch.eye(4))
    dense = kkt_solve(torch.stack(H), rhs, free)
    torch.testing.assert_close(kkt_solve_kronecker(A, rhs, free), dense, atol=1e-9, rtol=1e-7)


@pytest.mark.parametrize("smoothing", [0.0, 1.0])
def test_factored_adjoint_solve_matches_the_dense_projected_form(smoothing):
    """kkt_solve_factored (the null-space Cholesky of S (W-1), off-face entries pinned)
    against kkt_solve on the assembled generalized Hessian, lambda1 > 0, at a beta with
    active and inactive groups, on a face with several free entries per row."""
    X, Y = relu_task(14, 12, 30, 4, batch=2)
    g = torch.Generator().manual_seed(14)
    beta = torch.softmax(torch.randn(2, 12, 4, generator=g, dtype=X.dtype), -1)
    free = (torch.rand(2, 12, 4, generator=g) < 0.5) | Y.bool()
    rhs = torch.randn(2, 12, 4, generator=g, dtype=X.dtype)
    l1 = (0.3 * lambda1_all_off(X, Y)).reshape(2, 1, 1)
    l2 = torch.tensor([0.5, 2.0], dtype=X.dtype).reshape(2, 1, 1)
    H = dual_hessian(X, Y, beta, l1, l2, smoothing)
    dense = kkt_solve(H, rhs, free)
    assert dense.abs().amax() > 1e-3
    torch.testing.assert_close(kkt_solve_factored(X, Y, beta, l1, l2, smoothing, rhs, free), dense, atol=1e-9, rtol=1e-7)


@pytest.mark.reference
def test_gap_safe_screening_only_discards_groups_that_are_zero_at_the_optimum():
    """With smoothing s > 0 the screened groups of a loose iterate are zero in the CVXPY
    solution; the screened solve returns the unscreened answer."""
    X, Y = relu_task(14, 15, 60, 5, batch=1)
    l1, l2, s = 0.4 * float(lambda1_all_off(X, Y)), 1.0, 1.0
    beta, info = GroupLassoSVMDual(tol=1e-2, smoothing=s).run(X, Y, l1, l2)
    l1t, l2t = torch.full((1, 1, 1), l1), torch.full((1, 1, 1), l2)
    V = correlations(X, Y - beta)
    keep = safe_groups(V, X.norm(dim=1), l1t, l2t, s, info.primal - info.dual)
    W_star, _ = solve_primal(X[0].numpy(), Y[0].numpy(), l1, l2, s)
    screened = ~keep[0]
    assert int(screened.sum()) >= 10
    assert torch.from_numpy(W_star)[screened].norm(dim=-1).max() < 1e-6
    check_against_cvxpy(X, Y, l1, l2, s, methods=("ipm",))


def test_kkt_residual_vanishes_only_at_the_solution():
    """The projected fixed-point residual: zero at the solution, not at the start beta = Y."""
    X, Y = relu_task(15, 12, 20, 3, batch=2)
    l1 = torch.tensor([0.0, 0.3]) * lambda1_all_off(X, Y)
    l1t, l2t = l1.reshape(2, 1, 1), torch.ones(2, 1, 1)
    beta, info = GroupLassoSVMDual(tol=1e-12).run(X, Y, l1, 1.0)
    assert info.converged.all()
    assert (kkt_residual(X, Y, beta, l1t, l2t, 0.0) < 1e-6).all()
    assert (kkt_residual(X, Y, Y, l1t, l2t, 0.0) > 1e-2).all()


def test_groups_tied_at_their_threshold_take_few_newton_iterations():
    """s = 0, small lambda2, lambda1 well inside the active range: many groups end on the
    kink ||V_j|| = lambda1 (D < S makes it common). Newton steps on f itself keep moving
    them across it (gap stuck near 1e-5 for 100 iterations); the group pairs of
    docs/math.md section 6 reach 1e-6 in a few dozen."""
    X, Y = relu_task(14, 75, 40, 5, batch=3)
    off = lambda1_all_off(X, Y)
    Xs, Ys = X.repeat(4, 1, 1), Y.repeat(4, 1, 1)
    l1 = torch.cat([0.5 * off, 0.8 * off, 0.5 * off, 0.8 * off])
    l2 = torch.tensor([0.1] * 6 + [1.0] * 6, dtype=X.dtype)
    _, info = GroupLassoSVMDual(tol=1e-6, max_iter=50).run(Xs, Ys, l1, l2)
    assert info.converged.all(), info.summary()


@pytest.mark.reference
def test_a_non_unique_dual_converges():
    """Each feature column repeated ten times and two identical support points with
    different labels, s = 0: the dual's optimum is not unique and groups end just below
    their threshold. Until the fourteenth session the Newton model there overstated the
    curvature of the optimal face (a folded rank-one term, and a ridge relative to the
    barrier's 1e11 entries), and the iterates crept at 2% an iteration to a gap of 4e-5
    (docs/math.md 6, "Curvature gathered" and "Ridge")."""
    g = torch.Generator().manual_seed(91)
    X = torch.randn(25, 300, dtype=torch.float64, generator=g)[:, :30].clamp_min(0.0).repeat(1, 10)
    y = torch.randperm(25, generator=g) % 5
    X[1] = X[0]
    Y = torch.nn.functional.one_hot(y, 5).to(X.dtype)
    l1 = 0.9 * lambda1_max(X.numpy(), Y.numpy())
    beta, info = GroupLassoSVMDual(tol=1e-6, max_iter=40).run(X[None], Y[None], l1, 0.1)
    assert info.converged.all(), info.summary()
    W_star, _ = solve_primal(X.numpy(), Y.numpy(), l1, 0.1)
    W = dual_weights(X[None], Y[None], beta, l1, 0.1)[0]
    torch.testing.assert_close(W, torch.from_numpy(W_star), atol=1e-3 * float(W.abs().max()), rtol=0.0)
