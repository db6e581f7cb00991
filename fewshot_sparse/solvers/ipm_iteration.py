"""One iteration of the batched interior-point solver (group_lasso_ipm.py; docs/math.md, 6):
the Newton system at the current point, Mehrotra's predictor-corrector direction, the
step length (fraction to the boundary, then the line search for lambda1 > 0) and the
evaluation of the new point.

``iteration`` is a function of its state and constants (dicts of tensors) only, so that
graph_loop.py can capture it as one CUDA graph; ``EagerLoop`` runs it without capture.
state: beta, nu, z, p, d, gap (primal, dual, relative gap), gm (the model's
gradient), ridge, done, and for lambda1 > 0 V = X^T (Y - beta), eps and, where the
sync-free mode gathers to a static width, count (``rank_one_count``). consts: X, Y,
l1, l2 [B, 1, 1], floor [B, 1, 1] (the centring floor, per task), and K, A (lambda1 = 0:
X X^T and the class block) or l1x (lambda1 in X's dtype), eps0, N (the sum-zero basis),
and mu0.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import NamedTuple, Optional, Tuple

import torch
from torch import Tensor

from fewshot_sparse.solvers.dual_hessian import curvature, hessian_factors
from fewshot_sparse.solvers.group_lasso_dual import (
    correlations,
    gap_from_scores,
    gradient_from_scores,
    scores,
    shrunk_norms,
)
from fewshot_sparse.solvers.ipm_line_search import backtrack, batched_line_search
from fewshot_sparse.solvers.ipm_systems import KroneckerSystem, NullSpaceSystem
from fewshot_sparse.solvers.prox import block_soft_threshold, smooth_shrink

WORK = torch.float64  # iterates, Newton matrices and factors (the module docstring of group_lasso_ipm.py)
_STEP_TO_BOUNDARY = 0.995


class Options(NamedTuple):
    smooth: bool  # lambda1 > 0 somewhere: the smoothed model (else K = X X^T carries f)
    sync_free: bool
    smoothing: float
    width: Optional[int] = None  # sync-free, lambda1 > 0: rank-one groups gathered to this width (None: all D)


def evaluate(c, o: Options, beta: Tensor, eps: Optional[Tensor]):
    """grad f, (primal, dual, gap), V and the gradient of the Newton model at beta: one
    product with X^T and one with X (true and model scores side by side)."""
    X, Y, l1, l2, s = c["X"], c["Y"], c["l1"], c["l2"], o.smoothing
    if not o.smooth:
        Z, sq, l21 = scores(X, Y, beta, l1, l2, c["K"], norms=True)
        g = gradient_from_scores(Y, beta, l2, s, Z)
        return g, gap_from_scores(Y, beta, l1, l2, s, Z, sq, l21), None, g
    W = Y.shape[-1]
    V = correlations(X, Y - beta)
    U = block_soft_threshold(V, c["l1x"])
    ZZ = torch.bmm(X, torch.cat([U, smooth_shrink(V, c["l1x"], eps)], -1)).to(WORK) / l2
    Z, Zm = ZZ[..., :W], ZZ[..., W:]
    gaps = gap_from_scores(Y, beta, l1, l2, s, Z, *shrunk_norms(U, WORK))
    return gradient_from_scores(Y, beta, l2, s, Z), gaps, V, gradient_from_scores(Y, beta, l2, s, Zm)


def smoothing_of(c, beta: Tensor, z: Tensor) -> Tensor:
    """The smoothing eps [..., B, 1, 1] of the Newton model: eps0 (a fraction of lambda1)
    times sqrt(mu / mu0), capped at eps0."""
    mu = (beta * z).mean((-2, -1), keepdim=True)
    return c["eps0"] * torch.sqrt(mu / c["mu0"]).clamp(max=1.0).to(c["X"].dtype)


def newton_system(st, c, o: Options):
    """The factorised Newton system at the state's point (ipm_systems.py)."""
    z, beta = st["z"], st["beta"]
    if not o.smooth:
        return KroneckerSystem(c["A"], z / beta, st["ridge"])
    factors = hessian_factors(c["X"], c["Y"], beta, c["l1"], c["l2"], o.smoothing, V=st["V"],
                              gather=not o.sync_free, eps=st["eps"], width=o.width)
    return NullSpaceSystem(factors, z / beta, st["ridge"], basis=c["N"])


def iteration(st, c, o: Options, system=None):
    """One interior-point iteration: the state dict (beta, nu, z, their evaluation, ridge,
    done) after it. Finished tasks (``done``) keep their point. Reads nothing but its
    arguments, so that graph_loop.py can capture it; ``system`` may come factorised."""
    beta, nu, z, gm, ridge = st["beta"], st["nu"], st["z"], st["gm"], st["ridge"]
    X, Y, l1, l2, s = c["X"], c["Y"], c["l1"], c["l2"], o.smoothing
    system = newton_system(st, c, o) if system is None else system
    step = newton_direction(system, beta, z, gm + nu - z, c["floor"])
    ridge = torch.where(system.ok, ridge, ridge * 1e4)
    step.alpha = alpha = torch.where(st["done"][:, None, None], 0.0, step.alpha)
    evaluation = None
    eps_of = functools.partial(smoothing_of, c)
    if o.smooth and o.sync_free:
        alpha = batched_line_search(X, Y, l1, l2, s, eps_of, beta, nu, z, gm, step)
    elif o.smooth:  # the chosen point comes evaluated
        alpha, evaluation = backtrack(functools.partial(evaluate, c, o), eps_of, beta, nu, z, gm, step)
    beta = beta + alpha * step.d_beta
    z = z + alpha * step.d_z
    eps = eps_of(beta, z) if o.smooth else None
    _, (p, d, gap), V, gm = evaluate(c, o, beta, eps) if evaluation is None else evaluation
    out = dict(beta=beta, nu=nu + alpha * step.d_nu, z=z, p=p, d=d, gap=gap, gm=gm, ridge=ridge, done=st["done"])
    if o.smooth:
        out.update(V=V, eps=eps)
    if "count" in st:  # the sync-free gather's width is read from it at the check
        out["count"] = rank_one_count(V, l1, eps)
    return out


def rank_one_count(V: Tensor, l1: Tensor, eps: Tensor) -> Tensor:
    """The largest number of groups with rank-one curvature in a task (dual_hessian.py) at
    the point of V and eps: what the Newton matrix there gathers. On the device."""
    return curvature(V, l1, eps)[3].sum(-1).max()


class EagerLoop:
    """graph_loop.GraphLoop's interface without static buffers (the CPU path, where
    screening may shrink the features between iterations)."""

    def __init__(self, state, consts, options: Options):
        self.state, self.consts, self._options = state, consts, options

    def write(self, **values: Tensor) -> None:
        self.state.update(values)

    def step(self) -> None:
        # the previous factor is freed only once the new one exists: freed first, glibc
        # returns its pages to the OS and every later touch faults (measured on 8 tasks,
        # 15-shot, D = 640: 140,000 faults a solve instead of 30,000, 25% more time)
        system = newton_system(self.state, self.consts, self._options)
        self._system = system
        self.state = iteration(self.state, self.consts, self._options, system)


@dataclass
class Step:
    d_beta: Tensor
    d_nu: Tensor
    d_z: Tensor
    alpha: Tensor  # [B, 1, 1] step length (fraction to the boundary)


def newton_direction(system, beta: Tensor, z: Tensor, r_dual: Tensor, floor: Tensor) -> Step:
    """Mehrotra predictor-corrector direction (docs/math.md, 6): one factorisation of the
    Newton system (ipm_systems.py) serves the affine-scaling predictor and the corrector;
    ``floor`` [B, 1, 1] is the centring floor relative to the dual residual. A task whose
    factorisation failed gets a zero step."""

    def solve(r_comp: Tensor, need_nu: bool = True) -> Tuple[Tensor, Optional[Tensor], Tensor]:
        d_beta, d_nu = system.solve(-r_dual - r_comp / beta, need_nu)
        return d_beta, d_nu, -(r_comp + z * d_beta) / beta

    comp = beta * z
    mu = comp.mean((1, 2), keepdim=True)
    db, _, dz = solve(comp, need_nu=False)  # predictor (affine scaling)
    a_aff = max_step(beta, db, z, dz, 1.0)
    mu_aff = ((beta + a_aff * db) * (z + a_aff * dz)).mean((1, 2), keepdim=True)
    sigma = (mu_aff / mu).clamp(0.0, 1.0) ** 3
    # lambda1 > 0: grad f is only piecewise smooth, so the dual residual is re-created by
    # the model error where a group crosses its threshold; complementarity is not driven
    # below that residual, or the iterates would commit to a face too early and stall
    target = torch.maximum(sigma * mu, floor * r_dual.abs().amax((1, 2), keepdim=True)).minimum(mu)
    db, dnu, dz = solve(comp + db * dz - target)  # corrector + centring
    alpha = max_step(beta, db, z, dz, _STEP_TO_BOUNDARY)
    bad = ~system.ok | ~torch.isfinite(alpha)
    alpha, db, dnu, dz = (torch.where(bad, 0.0, t) for t in (alpha, db, dnu, dz))
    return Step(db, dnu, dz, alpha)


def max_step(beta: Tensor, db: Tensor, z: Tensor, dz: Tensor, fraction: float) -> Tensor:
    """The largest alpha <= 1 with beta + alpha db >= (1 - fraction) beta and the same for
    z, per task [B, 1, 1]."""
    x, dx = torch.cat([beta, z], -1), torch.cat([db, dz], -1)  # one pass over both
    return (fraction * torch.where(dx < 0, -x / dx, float("inf")).amin((1, 2), keepdim=True)).clamp(max=1.0)
