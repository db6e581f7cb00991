"""Independent CVXPY reference for the group-Lasso Crammer-Singer SVM primal (one task,
numpy in/out). Used by tests/solvers and tests/implicit (docs/math.md, 1 and 5)."""

from __future__ import annotations

import cvxpy as cp
import numpy as np

CLARABEL_TIGHT = dict(tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10, max_iter=500)


def solve_primal(X, Y, lambda1, lambda2, smoothing=0.0):
    """argmin_W P(W) (or the smoothed primal for smoothing > 0) with Clarabel at tight
    tolerances. Returns (W [D, W], optimal value)."""
    X, Y = np.asarray(X, float), np.asarray(Y, float)
    S, D = X.shape
    K = Y.shape[1]
    Wv = cp.Variable((D, K))
    Z = X @ Wv
    zy = cp.sum(cp.multiply(Z, Y), axis=1, keepdims=True)
    A = 1.0 - Y + Z - zy @ np.ones((1, K))
    if smoothing > 0:
        # max_{b in simplex} <b, a> - (mu/2)||b - y||^2 = min_{nu, lam >= 0} <y, a + lam> + ||a - nu 1 + lam||^2 / (2 mu)
        mu = smoothing / lambda2
        nu = cp.Variable((S, 1))
        lam = cp.Variable((S, K), nonneg=True)
        loss = cp.sum(cp.multiply(Y, A + lam)) + cp.sum_squares(A - nu @ np.ones((1, K)) + lam) / (2 * mu)
    else:
        loss = cp.sum(cp.max(A, axis=1))
    reg = lambda1 * cp.sum(cp.norm(Wv, 2, axis=1)) + 0.5 * lambda2 * cp.sum_squares(Wv)
    prob = cp.Problem(cp.Minimize(loss + reg))
    prob.solve(solver=cp.CLARABEL, **CLARABEL_TIGHT)
    assert prob.status in ("optimal", "optimal_inaccurate"), prob.status
    return Wv.value, prob.value


def lambda1_max(X, Y):
    """The smallest lambda1 with W* = 0 (docs/math.md, 4): min over beta supported on the
    wrong classes (row-stochastic) of max_j ||(X^T (Y - beta))_j||, as a CVXPY SOCP."""
    X, Y = np.asarray(X, float), np.asarray(Y, float)
    beta = cp.Variable(Y.shape, nonneg=True)
    t = cp.Variable()
    V = X.T @ (Y - beta)
    cons = [cp.sum(beta, axis=1) == 1, cp.multiply(beta, Y) == 0, cp.norm(V, 2, axis=1) <= t]
    prob = cp.Problem(cp.Minimize(t), cons)
    prob.solve(solver=cp.CLARABEL, **CLARABEL_TIGHT)
    assert prob.status in ("optimal", "optimal_inaccurate"), prob.status
    return float(prob.value)


def one_hot(y, K):
    return np.eye(K)[np.asarray(y)]
