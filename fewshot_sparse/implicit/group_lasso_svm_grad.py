"""Exact implicit differentiation of the group-Lasso SVM solution W*(X, lambda1, lambda2).

All of the project's autograd through the solver lives here: the one
``torch.autograd.Function`` (with the guard that makes its gradient first order only)
and the unrolled FISTA replay it is compared against. Forward: the batched dual solver
(no autograd), then W = W(beta*). Backward (docs/math.md, 7): the KKT conditions of the dual,
restricted to the free simplex entries F = {beta_ic > 0} and the active feature groups
A = {j : ||V_j|| > lambda1}, give one small dense symmetric system per task in the
beta-space (S W unknowns); its solution u turns the VJP into

    dL/dtheta = d/dtheta [ <G, W(beta, theta)> - <u, grad f(beta, theta)> ]   (beta fixed)

evaluated in closed form (pullbacks.py; compiled with the solver's ``compiled``).
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

import torch
from torch import Tensor

from fewshot_sparse.implicit.certificate import certified_weights
from fewshot_sparse.implicit.pullbacks import parameter_pullback, weights_pullback
from fewshot_sparse.solvers.group_lasso_dual import (
    Scalar,
    check_inputs,
    dual_weights,
    lipschitz_constant,
    needs_float64,
    task_param,
)
from fewshot_sparse.solvers.autocast import autocast_off
from fewshot_sparse.solvers.compiled import maybe_compiled
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
        # first order only: the pullbacks hold beta* and the adjoint u fixed, so autograd
        # through them (create_graph=True) gave a second derivative 28% off the finite
        # differences; under create_graph the gradients come back as _FirstOrderOnly's
        with torch.no_grad(), autocast_off(G.device):  # a backward inside an autocast region too
            grads = _ImplicitGroupLassoSVM._backward(ctx, G)
        if not torch.is_grad_enabled():
            return grads
        inputs = [t for t in ctx.saved_tensors[:3] if t.requires_grad]
        return tuple(_FirstOrderOnly.apply(g, *inputs) if g is not None else None for g in grads)

    @staticmethod
    def _backward(ctx, G):
        X, lambda1, lambda2, Y, beta = ctx.saved_tensors
        need = ctx.needs_input_grad[:3]
        if not any(need):
            return None, None, None, None, None, None, None, None
        B, s = X.shape[0], ctx.smoothing
        l1, l2 = task_param(lambda1, B, X), task_param(lambda2, B, X)
        g_beta, V = maybe_compiled(ctx.compiled, weights_pullback, X, Y, beta, l1, l2, G)
        u = adjoint_solve(X, Y, beta, l1, l2, s, g_beta, ctx.compiled, V)
        dX, dl1, dl2 = maybe_compiled(ctx.compiled, parameter_pullback, X, Y, beta, l1, l2, s, G, u, V)
        return (dX if need[0] else None, _to_shape(dl1, lambda1) if need[1] else None,
                _to_shape(dl2, lambda2) if need[2] else None, None, None, None, None, None)


class _FirstOrderOnly(torch.autograd.Function):
    """The identity on an implicit gradient, whose own gradient is an error naming the
    head (where torch's once_differentiable names no one)."""

    @staticmethod
    def forward(ctx, grad, *inputs):
        return grad.clone()

    @staticmethod
    def backward(ctx, *_):
        raise RuntimeError(
            "the group-Lasso SVM's implicit gradient is first order: it cannot be differentiated "
            "again (create_graph=True, e.g. second-order MAML); use mode='unrolled' (autograd "
            "through FISTA's iterations) for higher-order gradients")


def _to_shape(per_task: Tensor, lam: Tensor) -> Tensor:
    """A hyperparameter's gradient [B, 1, 1] summed to the shape it was given ([] or [B],
    ``task_param``)."""
    return per_task.sum() if lam.dim() == 0 else per_task.reshape(lam.shape)


# a caller's torch.compile (a compiled model around the head) calls the fit as one opaque
# step: traced, the solver's loop and host syncs made dozens of graphs (60 s to compile
# one 5-way 5-shot head on the CPU, again for each new shape); ``compiled=True`` compiles
# the solver's own parts
@torch.compiler.disable
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
    fits). Autocast is off inside (solvers/autocast.py)."""
    with autocast_off(X.device):
        return _fit(X, Y, lambda1, lambda2, solver, mode, beta0)


def _fit(X, Y, lambda1, lambda2, solver: GroupLassoSVMDual, mode: str, beta0: Optional[Tensor]):
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
    W64, report, redo = maybe_compiled(solver.compiled, certified_weights, X.detach(), Y, beta, lambda1.detach(),
                                       lambda2.detach(), float(solver.smoothing), solver.tol,
                                       (info.primal, info.dual, info.gap, info.converged))
    W = _ImplicitGroupLassoSVM.apply(X, lambda1, lambda2, Y, beta, float(solver.smoothing), W64, solver.compiled)
    info = SolverInfo(info.iterations, *report)
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
