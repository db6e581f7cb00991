"""cvxpylayers reference for the group-Lasso Crammer-Singer SVM head (slow; for tests and
benchmarks only).

Per task, with support X [S, D], one-hot labels Y [S, W] and weights W [D, W]:

    P(W) = sum_i max_c [1{c != y_i} + x_i.w_c - x_i.w_{y_i}]
           + lambda1 sum_j ||W_j,:||_2 + (lambda2 / 2) ||W||_F^2 ,   logits = X_query W.

The same primal as ``fewshot_sparse.solvers.group_lasso_svm`` (docs/math.md), written
directly in CVXPY and differentiated by cvxpylayers/diffcp. X, Y, lambda1 and lambda2 are
Parameters. ``X @ W`` with ``Y`` multiplying it would be parameter x parameter x variable
(not DPP), so the layer introduces ``Z = X @ W`` as a variable with an equality
constraint and writes the true-class score as ``sum_c Y_ic Z_ic`` (elementwise product).

Accuracy. cvxpylayers' defaults (SCS, eps ~1e-4..1e-5, diffcp's iterative ``lsqr``
derivative) are too loose to check gradients to 1e-4 relative. The default here is the
interior-point solver Clarabel with gap/feasibility tolerances 1e-12 and diffcp's
``dense`` derivative: on 25 x 40 x 5 problems it matches SCS at eps 1e-11 (which needs
~20 s per problem) to 5e-7 in the gradient, while ``lsqr`` is off by ~4e-5 relative.
``dense`` builds an (n+m+1)^2 matrix, so pass ``derivative_mode="lsqr"`` for D in the
hundreds and beyond (the benchmark does).

Checked with cvxpy 1.9.3, cvxpylayers 1.2.0, diffcp 1.1.9, clarabel 0.11.1.
"""

from __future__ import annotations

import functools
from typing import Any, Dict, Optional, Union

import cvxpy as cp
import numpy as np
import torch
from cvxpylayers.torch import CvxpyLayer
from torch import Tensor, nn

from fewshot_sparse.heads import HeadOutput, check_head_inputs, check_nonnegative

DEFAULT_SOLVER_ARGS: Dict[str, Any] = {
    "solve_method": "Clarabel",
    "tol_gap_abs": 1e-12,
    "tol_gap_rel": 1e-12,
    "tol_feas": 1e-12,
    "max_iter": 500,
}


def group_lasso_svm_problem(n_support: int, n_features: int, n_way: int):
    """The CVXPY problem for one task; returns (problem, parameters [X, Y, lambda1,
    lambda2], weight variable W)."""
    X = cp.Parameter((n_support, n_features), name="X")
    Y = cp.Parameter((n_support, n_way), name="Y")
    lambda1 = cp.Parameter(nonneg=True, name="lambda1")
    lambda2 = cp.Parameter(nonneg=True, name="lambda2")
    W = cp.Variable((n_features, n_way), name="W")
    Z = cp.Variable((n_support, n_way), name="Z")  # Z = X W, the support scores
    true_score = cp.sum(cp.multiply(Y, Z), axis=1, keepdims=True) @ np.ones((1, n_way))
    hinge = cp.sum(cp.max(1 - Y + Z - true_score, axis=1))
    objective = hinge + lambda1 * cp.sum(cp.norm(W, 2, axis=1)) + lambda2 / 2 * cp.sum_squares(W)
    problem = cp.Problem(cp.Minimize(objective), [Z == X @ W])
    if not problem.is_dpp():
        raise RuntimeError(
            f"the reference problem ({n_support} support x {n_features} features x {n_way} "
            f"classes) is not DPP under cvxpy {cp.__version__}, so cvxpylayers cannot "
            f"differentiate it (checked with cvxpy 1.9.3)")
    return problem, [X, Y, lambda1, lambda2], W


@functools.lru_cache(maxsize=32)
def cached_layer(n_support: int, n_features: int, n_way: int) -> CvxpyLayer:
    """One CvxpyLayer per problem shape (canonicalisation is the slow part to build)."""
    problem, params, W = group_lasso_svm_problem(n_support, n_features, n_way)
    return CvxpyLayer(problem, parameters=params, variables=[W])


class GroupLassoSVMReference(nn.Module):
    """``reference(query, support, support_labels, n_way) -> HeadOutput``, the head
    contract, solved by cvxpylayers in float64 on the CPU (results are returned on the
    inputs' device and dtype).

    lambda1, lambda2: floats or tensors (0-d); pass tensors with ``requires_grad`` to
    get gradients with respect to them. ``active`` is ``row norm of W > active_tol``
    (an interior-point solution has no exact zeros). ``info`` is None.
    """

    def __init__(
        self,
        lambda1: Union[float, Tensor],
        lambda2: Union[float, Tensor],
        solver_args: Optional[Dict[str, Any]] = None,
        derivative_mode: str = "dense",
        active_tol: float = 1e-6,
    ):
        super().__init__()
        check_nonnegative("lambda1", lambda1)
        check_nonnegative("lambda2", lambda2, strict=True)
        self.lambda1 = lambda1
        self.lambda2 = lambda2
        self.solver_args = {**DEFAULT_SOLVER_ARGS, **(solver_args or {}), "mode": derivative_mode}
        self.active_tol = active_tol

    def forward(self, query: Tensor, support: Tensor, support_labels: Tensor, n_way: int) -> HeadOutput:
        check_head_inputs(query, support, support_labels, n_way)
        f64 = dict(dtype=torch.float64, device="cpu")
        X = support.to(**f64)
        Y = nn.functional.one_hot(support_labels.cpu().long(), n_way).to(torch.float64)
        l1 = torch.as_tensor(self.lambda1).to(**f64)
        l2 = torch.as_tensor(self.lambda2).to(**f64)
        layer = cached_layer(X.shape[1], X.shape[2], n_way)
        (weights,) = layer(X, Y, l1, l2, solver_args=self.solver_args)
        weights = weights.to(dtype=support.dtype, device=support.device)
        logits = query @ weights
        active = torch.linalg.vector_norm(weights.detach(), dim=-1) > self.active_tol
        return HeadOutput(logits=logits, weights=weights, active=active, info=None)
