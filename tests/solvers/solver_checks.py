"""The check of both algorithms against one independent CVXPY/Clarabel solve of the primal
per task (float64), shared by the solver tests; the seeded tasks are in tasks.py."""

import numpy as np
import torch

from cvx_glsvm import solve_primal
from fewshot_sparse.solvers.group_lasso_dual import dual_objective, dual_weights, primal_objective
from fewshot_sparse.solvers.group_lasso_svm import METHODS, GroupLassoSVMDual

TOL = 1e-9


def check_against_cvxpy(X, Y, l1, l2, smoothing=0.0, tol=TOL, methods=METHODS):
    """Both algorithms (the interior-point default and its FISTA twin) against one
    CVXPY/Clarabel solve of the primal per task. Returns the first method's results."""
    l1b = torch.as_tensor(l1).expand(X.shape[0])
    l2b = torch.as_tensor(l2).expand(X.shape[0])
    ref = [solve_primal(X[b].numpy(), Y[b].numpy(), float(l1b[b]), float(l2b[b]), smoothing) for b in range(X.shape[0])]
    return [check_method(X, Y, l1, l2, smoothing, tol, method, ref) for method in methods][0]


def check_method(X, Y, l1, l2, smoothing, tol, method, ref):
    solver = GroupLassoSVMDual(tol=tol, max_iter=100 if method == "ipm" else 50000, smoothing=smoothing, method=method)
    beta, info = solver.run(X, Y, l1, l2)
    assert info.converged.all(), info.summary()
    assert (info.gap <= tol).all()
    assert (info.dual <= info.primal + 1e-12 * info.primal.abs().clamp_min(1)).all()
    W = dual_weights(X, Y, beta, l1, l2)
    for b, (Wc, pc) in enumerate(ref):
        assert abs(float(info.primal[b]) - pc) <= 1e-6 * max(1.0, abs(pc))
        np.testing.assert_allclose(W[b].numpy(), Wc, atol=1e-4)
    # the reported values are the module's objective functions at the returned point
    torch.testing.assert_close(info.primal, primal_objective(X, Y, W, l1, l2, smoothing))
    torch.testing.assert_close(info.dual, dual_objective(X, Y, beta, l1, l2, smoothing))
    # feasibility of the dual iterate
    assert (beta >= 0).all()
    torch.testing.assert_close(beta.sum(-1), torch.ones_like(beta.sum(-1)))
    return beta, W, info


