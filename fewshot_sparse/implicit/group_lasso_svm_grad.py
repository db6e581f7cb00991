"""Exact implicit differentiation of the group-Lasso SVM solution W*(X, lambda1, lambda2).

All of the project's autograd through the solver lives here: the one
``torch.autograd.Function`` and the unrolled FISTA replay it is compared against. Forward: the batched dual solver (no
autograd), then W = W(beta*). Backward (docs/math.md, 7): the KKT conditions of the dual,
restricted to the free simplex entries F = {beta_ic > 0} and the active feature groups
A = {j : ||V_j|| > lambda1}, give one small dense symmetric system per task in the
beta-space (S W unknowns); its solution u turns the VJP into

    dL/dtheta = d/dtheta [ <G, W(beta, theta)> - <u, grad f(beta, theta)> ]   (beta fixed)

which autograd evaluates on the closed-form maps W(beta, theta) and grad f(beta, theta).
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

import torch
from torch import Tensor

from fewshot_sparse.solvers.group_lasso_dual import (
    FLOOR_MISS,
    Scalar,
    check_inputs,
    dual_gradient,
    dual_weights,
    lipschitz_constant,
    needs_float64,
    rounding_floor,
    task_param,
)
from fewshot_sparse.solvers.group_lasso_fista import fista_step
from fewshot_sparse.solvers.group_lasso_newton import adjoint_solve
from fewshot_sparse.solvers.group_lasso_svm import GroupLassoSVMDual
from fewshot_sparse.solvers.info import SolverInfo, info_to
from fewshot_sparse.solvers.prox import project_rows_to_simplex


class _ImplicitGroupLassoSVM(torch.autograd.Function):
    """W = W(beta*) with beta* given (solved outside); backward by implicit differentiation."""

    @staticmethod
    def forward(ctx, X, lambda1, lambda2, Y, beta, smoothing):
        ctx.save_for_backward(X, lambda1, lambda2, Y, beta)
        ctx.smoothing = smoothing
        return dual_weights(X, Y, beta, lambda1, lambda2)

    @staticmethod
    def backward(ctx, G):
        X, lambda1, lambda2, Y, beta = ctx.saved_tensors
        s = ctx.smoothing
        need = ctx.needs_input_grad[:3]
        if not any(need):
            return None, None, None, None, None, None
        B = X.shape[0]
        with torch.enable_grad():
            Xd = X.detach().requires_grad_(need[0])
            l1d = lambda1.detach().requires_grad_(need[1])
            l2d = lambda2.detach().requires_grad_(need[2])
            bd = beta.detach().requires_grad_(True)
            l1, l2 = task_param(l1d, B, Xd), task_param(l2d, B, Xd)
            Wb = dual_weights(Xd, Y, bd, l1, l2)
            direct = (Wb * G).sum()
            (g_beta,) = torch.autograd.grad(direct, bd, retain_graph=True)
            with torch.no_grad():
                l1c, l2c = l1.detach(), l2.detach()
                u = adjoint_solve(X, Y, beta, l1c, l2c, s, g_beta)
            obj = direct - (dual_gradient(Xd, Y, bd, l1, l2, s) * u).sum()
            inputs = [z for z, nd in zip((Xd, l1d, l2d), need) if nd]
            grads = list(torch.autograd.grad(obj, inputs, allow_unused=True))
        out = []
        for z, nd in zip((Xd, l1d, l2d), need):
            if nd:
                gz = grads.pop(0)
                out.append(torch.zeros_like(z) if gz is None else gz)
            else:
                out.append(None)
        return out[0], out[1], out[2], None, None, None


def group_lasso_svm_fit(
    X: Tensor,
    Y: Tensor,
    lambda1: Scalar,
    lambda2: Scalar,
    solver: GroupLassoSVMDual,
    mode: str = "implicit",
    beta0: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor, SolverInfo]:
    """Fit B group-Lasso SVMs; returns (W [B, D, W] differentiable w.r.t. X, lambda1 and
    lambda2; beta [B, S, W] detached; per-task SolverInfo).

    mode "implicit": gradients from the optimality conditions (docs/math.md, 7), exact at
    the solution, cost independent of the iteration count and of the algorithm. mode
    "unrolled": plain FISTA (Newton polish off) replayed under autograd, for comparison
    only. Where X's dtype is too coarse for solver.tol (``needs_float64``: lambda1 > 0 and
    lambda2 small against ||x||^2), the whole fit runs in float64 and W comes back in X's
    dtype; so does a second fit, warm-started, where the first stopped above tol near its
    rounding floor (``iterations`` then counts both)."""
    if mode not in ("implicit", "unrolled"):
        raise ValueError(f"mode must be 'implicit' or 'unrolled', got {mode!r}")
    check_inputs(X, Y)
    lambda1 = torch.as_tensor(lambda1, dtype=X.dtype, device=X.device)
    lambda2 = torch.as_tensor(lambda2, dtype=X.dtype, device=X.device)
    if needs_float64(X, lambda1, lambda2, solver.tol):  # weak regularisation (docs/math.md, 6)
        W, beta, info = group_lasso_svm_fit(
            X.double(), Y.double(), lambda1.double(), lambda2.double(), solver, mode,
            None if beta0 is None else beta0.double())
        return W.to(X.dtype), beta.to(X.dtype), info_to(info, X.dtype)
    if mode == "unrolled":  # plain FISTA, so that the replay follows the same iterates
        solver = dataclasses.replace(solver, method="fista", polish=False)
    beta, info = solver.run(X, Y, lambda1, lambda2, beta0=beta0)
    if mode == "implicit" and _stopped_by_rounding(X, lambda1, lambda2, info):
        # the rounding floor is an estimate, low by up to 10x on some features (docs/math.md
        # 6, "Dtypes"): where a task still stopped above tol at a gap that X's rounding can
        # explain, the whole fit again in float64 from here
        W, beta, info64 = group_lasso_svm_fit(X.double(), Y.double(), lambda1.double(), lambda2.double(),
                                              solver, mode, beta.double())
        info64 = dataclasses.replace(info64, iterations=info.iterations + info64.iterations)
        return W.to(X.dtype), beta.to(X.dtype), info_to(info64, X.dtype)
    Y = Y.detach()
    if mode == "implicit":
        W = _ImplicitGroupLassoSVM.apply(X, lambda1, lambda2, Y, beta, float(solver.smoothing))
    else:
        beta_u = unrolled_fista(X, Y, lambda1, lambda2, solver.smoothing, info.iterations, beta0=beta0)
        W = dual_weights(X, Y, beta_u, lambda1, lambda2)
    return W, beta, info


def _stopped_by_rounding(X: Tensor, lambda1: Tensor, lambda2: Tensor, info: SolverInfo) -> bool:
    """Whether some unconverged task stopped within FLOOR_MISS x its ``rounding_floor``:
    X's dtype may be what stopped it, not the iteration cap (a solve cut short on purpose,
    e.g. max_iter = 5, ends far above it and is left alone)."""
    floor = rounding_floor(X, lambda1, lambda2)
    return bool((~info.converged & (floor > 0) & (info.gap <= FLOOR_MISS * floor)).any())


def unrolled_fista(
    X: Tensor, Y: Tensor, lambda1: Scalar, lambda2: Scalar, smoothing: float, iterations: Tensor,
    beta0: Optional[Tensor] = None,
) -> Tensor:
    """Replay ``iterations[b]`` FISTA steps per task with autograd recording them (for
    comparing against the implicit gradient only: memory grows with the iterations).
    The step size is treated as a constant."""
    check_inputs(X, Y)
    B = X.shape[0]
    l1, l2 = task_param(lambda1, B, X), task_param(lambda2, B, X)
    with torch.no_grad():
        step = 1.0 / lipschitz_constant(X.detach(), l2.detach(), smoothing)
    x = Y.clone() if beta0 is None else project_rows_to_simplex(beta0.detach().to(X))
    y, t = x, torch.ones_like(step)
    n = iterations.reshape(B, 1, 1).to(X.device)
    for k in range(int(iterations.max()) if B else 0):
        xn, yn, tn = fista_step(X, Y, l1, l2, step, smoothing, x, y, t)
        run = k < n
        x, y, t = torch.where(run, xn, x), torch.where(run, yn, y), torch.where(run, tn, t)
    return x
