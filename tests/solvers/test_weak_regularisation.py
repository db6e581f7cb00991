"""Weak regularisation (lambda2 small against ||x||^2) with float32 features: float32
products (the correlations, and for lambda1 > 0 ||V_j|| - lambda1 = lambda2 ||W_j||)
resolve W too coarsely to certify tight gaps (docs/math.md, 6, "Dtypes"), so such fits
run in float64. Checked against an
independent CVXPY/Clarabel solve; without the promotion the solver stalls at a relative
gap of about 1e-4 here and these tests fail."""

import numpy as np
import torch

from cvx_glsvm import solve_primal
from fewshot_sparse.implicit.group_lasso_svm_grad import group_lasso_svm_fit
from fewshot_sparse.solvers.group_lasso_dual import needs_float64, primal_objective
from fewshot_sparse.solvers.group_lasso_svm import GroupLassoSVMDual
from tasks import lambda1_all_off, relu_task

LAMBDA2 = 1e-3  # mean ||x_i||^2 is ~32 here: lambda2 / ||x||^2 ~ 3e-5


def _weak_task():
    X, Y = relu_task(61, 25, 64, 5, batch=2, dtype=torch.float32)
    return X, Y, 0.3 * lambda1_all_off(X, Y)


def test_float64_is_needed_only_under_weak_regularisation():
    X, _, _ = _weak_task()
    assert needs_float64(X, LAMBDA2, 1e-4)
    assert not needs_float64(X.double(), LAMBDA2, 1e-4)  # already float64
    assert not needs_float64(X, 10.0, 1e-4)  # the floor (~1e-8) is far below tol
    assert needs_float64(X, torch.tensor([10.0, LAMBDA2]), 1e-4)  # one weak task suffices
    # many more features than points (a backbone's): round-off averages out over D, and
    # float32 suffices at lambda2 / ||x||^2 ~ 1e-4 (measured on ResNet-12 features)
    wide, _ = relu_task(63, 25, 16000, 5, dtype=torch.float32)
    ratio = 1e-4 * float((wide * wide).sum(-1).mean())
    assert not needs_float64(wide, ratio, 1e-4) and needs_float64(wide, ratio / 30, 1e-4)


def test_float32_features_reach_a_tight_gap_under_weak_regularisation():
    X, Y, l1 = _weak_task()
    solver = GroupLassoSVMDual(tol=1e-6)
    W, beta, info = group_lasso_svm_fit(X, Y, l1, LAMBDA2, solver)
    assert W.dtype == info.gap.dtype == torch.float32 and beta.dtype == torch.float64
    assert info.converged.all(), info.summary()
    _, info_solver = solver.run(X, Y, l1, LAMBDA2)  # the solver alone promotes too
    assert info_solver.converged.all(), info_solver.summary()
    for b in range(X.shape[0]):
        Wc, pc = solve_primal(X[b].double().numpy(), Y[b].double().numpy(), float(l1[b]), LAMBDA2)
        assert abs(float(info.primal[b]) - pc) <= 1e-5 * abs(pc)
        np.testing.assert_allclose(W[b].numpy(), Wc, atol=1e-4 * np.abs(Wc).max())


def test_float32_gradients_under_weak_regularisation_are_the_float64_ones():
    X, Y, l1 = _weak_task()
    Xq = torch.randn(2, 10, 64, generator=torch.Generator().manual_seed(62)).clamp_min(0)
    solver = GroupLassoSVMDual(tol=1e-8)
    grads = []
    for dtype in (torch.float32, torch.float64):
        x = X.detach().to(dtype).clone().requires_grad_()
        W, _, info = group_lasso_svm_fit(x, Y.to(dtype), l1.to(dtype), LAMBDA2, solver)
        assert info.converged.all()
        (torch.tanh(Xq.to(dtype) @ W)).sum().backward()
        grads.append(x.grad.double())
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-4 * float(grads[1].abs().max()))


def test_a_rounding_floor_the_estimate_misses_sends_the_fit_to_float64():
    """needs_float64 estimates float32's floor; here (shifted ReLU features, strong
    lambda2, tol 1e-7) it says float32 suffices and float32 stops above tol in some task:
    the fit then runs again in float64 from that point, and reaches tol."""
    X, Y = relu_task(3, 25, 600, 5, batch=4, dtype=torch.float32)
    X = X + 0.5  # a positive mean, like a backbone's features
    l1, l2, tol = 0.2 * lambda1_all_off(X, Y), 100.0, 1e-7
    assert not needs_float64(X, l2, tol)
    _, alone = GroupLassoSVMDual(tol=tol).run(X, Y, l1, l2)
    assert not alone.converged.all()  # the premise: float32 alone stalls,
    assert (alone.iterations <= 30).all()  # and stops there (it ran to 98 iterations)
    W, beta, info = group_lasso_svm_fit(X, Y, l1, l2, GroupLassoSVMDual(tol=tol))
    assert W.dtype == torch.float32 and info.converged.all(), info.summary()
    assert (info.iterations >= alone.iterations).all()  # both runs counted
    for b in range(2):
        Wc, pc = solve_primal(X[b].double().numpy(), Y[b].double().numpy(), float(l1[b]), l2)
        assert abs(float(info.primal[b]) - pc) <= 1e-6 * abs(pc)
        np.testing.assert_allclose(W[b].numpy(), Wc, atol=1e-4 * np.abs(Wc).max())
    # a solve cut short on purpose ends far above the floor: no second fit
    _, _, cut = group_lasso_svm_fit(X, Y, l1, l2, GroupLassoSVMDual(tol=tol, max_iter=3))
    assert (cut.iterations == 3).all() and not cut.converged.any()


def test_the_reported_gap_is_that_of_the_float32_weights_returned():
    """Shifted ReLU features (a large common mean, like a ResNet's), where X's rounding
    floor is underestimated: the solver's own gap (float64 iterate, float32 products) read
    7.9e-5 on task 3 here while the float32 W returned was 1.2e-4 from optimal. The fit reports
    the gap of what it returns and refits the tasks that miss tol in float64, so against
    CVXPY every task's W is within tol of the optimum."""
    X, Y = relu_task(5, 25, 2000, 5, batch=4, dtype=torch.float32)
    X = X + 4.0
    l1, l2, tol = 0.2 * lambda1_all_off(X, Y), 10.0, 1e-4
    assert not needs_float64(X, l2, tol)
    W, _, info = group_lasso_svm_fit(X, Y, l1, l2, GroupLassoSVMDual(tol=tol))
    assert info.converged.all(), info.summary()
    for b in (0, 3):  # task 3 is the one whose W missed tol under the solver's own gap
        _, pc = solve_primal(X[b].double().numpy(), Y[b].double().numpy(), float(l1[b]), l2)
        p = float(primal_objective(X[b:b + 1].double(), Y[b:b + 1].double(), W[b:b + 1].double(), float(l1[b]), l2))
        assert (p - pc) / max(abs(pc), 1.0) <= tol, b
        assert abs(float(info.primal[b]) - p) <= 1e-6 * abs(p)  # the report is that W's (in float32)

