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
    dual_value,
    dual_weights,
    lipschitz_constant,
    needs_float64,
    primal_objective,
    rounding_floor,
    task_param,
)
from fewshot_sparse.solvers.group_lasso_fista import fista_step
from fewshot_sparse.solvers.group_lasso_newton import adjoint_solve
from fewshot_sparse.solvers.group_lasso_svm import GroupLassoSVMDual
from fewshot_sparse.solvers.info import SolverInfo, info_to
from fewshot_sparse.solvers.prox import project_rows_to_simplex


class _ImplicitGroupLassoSVM(torch.autograd.Function):
    """W = W(beta*) with beta* given (solved outside); backward by implicit differentiation.
    W64, where given, is W(beta*) already formed in float64 (from X in float64: X^T (Y -
    beta) cancels, and formed in float32 on ResNet-12 features W was up to 0.13 from
    optimal, docs/math.md 6, "Dtypes"); the forward rounds it to X's dtype."""

    @staticmethod
    def forward(ctx, X, lambda1, lambda2, Y, beta, smoothing, W64=None, compiled=False):
        ctx.save_for_backward(X, lambda1, lambda2, Y, beta)
        ctx.smoothing, ctx.compiled = smoothing, compiled
        if W64 is None:
            return dual_weights(X, Y, beta, lambda1, lambda2)
        return W64.to(X.dtype)

    @staticmethod
    def backward(ctx, G):
        X, lambda1, lambda2, Y, beta = ctx.saved_tensors
        s = ctx.smoothing
        need = ctx.needs_input_grad[:3]
        if not any(need):
            return None, None, None, None, None, None, None, None
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
                u = adjoint_solve(X, Y, beta, l1c, l2c, s, g_beta, ctx.compiled)
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
        return out[0], out[1], out[2], None, None, None, None, None


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
    lambda2; beta [B, S, W] detached, float64 from the interior point; per-task SolverInfo).

    mode "implicit": gradients from the optimality conditions (docs/math.md, 7), exact at
    the solution, cost independent of the iteration count and of the algorithm. mode
    "unrolled": plain FISTA (Newton polish off) replayed under autograd, for comparison
    only. Where X's dtype is too coarse for solver.tol (``needs_float64``: lambda2 small
    against ||x||^2), the whole fit runs in float64 and W comes back in X's dtype. Else W
    is formed from a float64 copy of X and rounded to X's dtype. Near X's rounding floor
    the report is the gap of the W returned, evaluated in float64, and tasks that miss tol
    there are fitted again in float64, warm-started (``iterations`` then counts both
    fits)."""
    if mode not in ("implicit", "unrolled"):
        raise ValueError(f"mode must be 'implicit' or 'unrolled', got {mode!r}")
    check_inputs(X, Y)
    lambda1 = torch.as_tensor(lambda1, dtype=X.dtype, device=X.device)
    lambda2 = torch.as_tensor(lambda2, dtype=X.dtype, device=X.device)
    if needs_float64(X, lambda2, solver.tol):  # weak regularisation (docs/math.md, 6)
        W, beta, info = group_lasso_svm_fit(
            X.double(), Y.double(), lambda1.double(), lambda2.double(), solver, mode,
            None if beta0 is None else beta0.double())
        return W.to(X.dtype), beta, info_to(info, X.dtype)
    if mode == "unrolled":  # plain FISTA, so that the replay follows the same iterates
        solver = dataclasses.replace(solver, method="fista", polish=False)
    beta, info = solver.run(X, Y, lambda1, lambda2, beta0=beta0)
    Y = Y.detach()
    if mode == "unrolled":
        beta_u = unrolled_fista(X, Y, lambda1, lambda2, solver.smoothing, info.iterations, beta0=beta0)
        return dual_weights(X, Y, beta_u, lambda1, lambda2), beta, info
    if X.dtype == torch.float64:
        return _ImplicitGroupLassoSVM.apply(X, lambda1, lambda2, Y, beta, float(solver.smoothing), None,
                                            solver.compiled), beta, info
    X64 = X.detach().double()
    W64 = dual_weights(X64, Y.double(), beta.double(), lambda1.double(), lambda2.double())
    W = _ImplicitGroupLassoSVM.apply(X, lambda1, lambda2, Y, beta, float(solver.smoothing), W64, solver.compiled)
    # near X's rounding floor: the gap of what is returned, and where that misses tol (the
    # floor's estimate is low by up to 10x on some features, docs/math.md 6, "Dtypes")
    # those tasks fitted again in float64, warm-started
    floor = rounding_floor(X, lambda2)
    info = _certified(X64, Y, W, W64, beta, lambda1, lambda2, solver, info, floor)
    redo = _stopped_by_rounding(info, floor)
    if bool(redo.any()):
        return _refit_in_float64(X, Y, lambda1, lambda2, solver, W, beta, info, redo)
    return W, beta, info


def _refit_in_float64(X, Y, lambda1, lambda2, solver, W, beta, info: SolverInfo, redo: Tensor):
    """(W, beta, info) with the tasks ``redo`` [B] fitted again in float64 from ``beta``
    (W keeps its autograd through both fits; ``iterations`` counts both)."""
    idx = redo.nonzero()[:, 0]
    part = lambda t: t if t.dim() == 0 else t[idx]  # noqa: E731  (a [] or [B] hyperparameter)
    W_r, beta_r, info_r = group_lasso_svm_fit(X[idx].double(), Y[idx].double(), part(lambda1).double(),
                                              part(lambda2).double(), solver, "implicit", beta[idx].double())
    beta = beta.clone()
    beta[idx] = beta_r.to(beta.dtype)
    fields = {}
    for name in ("primal", "dual", "gap", "converged", "iterations"):
        value = getattr(info, name).clone()
        new = getattr(info_r, name)
        value[idx] = (value[idx] + new) if name == "iterations" else new.to(value.dtype)
        fields[name] = value
    return W.index_put((idx,), W_r.to(W.dtype)), beta, SolverInfo(**fields)


def _certified(X64: Tensor, Y: Tensor, W: Tensor, W64: Tensor, beta: Tensor, lambda1: Tensor, lambda2: Tensor,
               solver: GroupLassoSVMDual, info: SolverInfo, floor: Tensor) -> SolverInfo:
    """``info`` with the tasks whose rounding floor [B] is within FLOOR_MISS of tol
    re-certified: the relative gap of the W and beta returned, evaluated in float64 (X64
    is X in float64, W64 = W(beta) formed from it, before W was rounded: its norm gives
    the dual value without another product). The solver's own gap, at its float64
    iterate with X's products, can be below tol while the returned W is not (docs/math.md
    6, "Dtypes"). Other tasks keep their report."""
    band = FLOOR_MISS * floor >= solver.tol
    if not bool(band.any()):
        return info
    Y64, b64 = Y.detach().double(), beta.double()
    l1, l2 = lambda1.detach().double(), lambda2.detach().double()
    primal = primal_objective(X64, Y64, W.detach().double(), l1, l2, solver.smoothing)
    l2b = task_param(l2, X64.shape[0], X64)  # U = lambda2 W: ||U||^2 = lambda2^2 ||W||^2
    dual = dual_value(Y64, b64, (l2b[:, 0, 0] ** 2) * (W64 * W64).sum((1, 2)), l2b, solver.smoothing)
    gap = (primal - dual) / primal.abs().clamp_min(1.0)
    keep = lambda new, old: torch.where(band, new.to(old.dtype), old)  # noqa: E731
    gap = keep(gap, info.gap)
    return SolverInfo(iterations=info.iterations, primal=keep(primal, info.primal), dual=keep(dual, info.dual),
                      gap=gap, converged=gap <= solver.tol)


def _stopped_by_rounding(info: SolverInfo, floor: Tensor) -> Tensor:
    """The unconverged tasks [B] that stopped within FLOOR_MISS x their rounding floor [B]:
    X's dtype may be what stopped them, not the iteration cap (a solve cut short on
    purpose, e.g. max_iter = 5, ends far above it and is left alone)."""
    return ~info.converged & (floor > 0) & (info.gap <= FLOOR_MISS * floor)


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
