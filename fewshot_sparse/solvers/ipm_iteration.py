"""One iteration of the batched interior-point solver (group_lasso_ipm.py; docs/math.md, 6):
the Newton system at the current point, Mehrotra's predictor-corrector direction, the
step length (fraction to the boundary, then the line search for lambda1 > 0) and the
evaluation of the new point.

``iteration`` is a function of its state and constants (dicts of tensors) only, so that
graph_loop.py can capture it as one CUDA graph; ``EagerLoop`` runs it without capture.
state: beta, nu, z, p, d, gap (primal, dual, relative gap), gm (the model's
gradient), ridge, done, and for lambda1 > 0 V = X^T (Y - beta), its row norms, the
group pairs excess and slack [B, D] (ipm_groups.py), the point's merit (the line
search's base, ipm_line_search.py) and, where the sync-free mode gathers to a static
width, the Newton model's curvature at the point and the count of its rank-one groups
(``carried_curvature``). consts: X, Y, l1, l2 [B, 1, 1], floor [B, 1, 1] (the
centring floor, per task), and K, A (lambda1 = 0: X X^T and the class block) or l1x
(lambda1 in X's dtype) and N (the sum-zero basis).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import NamedTuple, Optional

import torch
from torch import Tensor

from fewshot_sparse.solvers.compiled import compiled_call
from fewshot_sparse.solvers.dual_hessian import curvature, hessian_factors
from fewshot_sparse.solvers.group_lasso_dual import (
    correlations,
    feature_products,
    gap_from_scores,
    gradient_from_scores,
    scores,
)
from fewshot_sparse.solvers.ipm_groups import GroupPairs, model_shrink
from fewshot_sparse.solvers.ipm_line_search import backtrack, batched_line_search, point_after
from fewshot_sparse.solvers.ipm_systems import KroneckerSystem, NullSpaceSystem
from fewshot_sparse.solvers.prox import reciprocal_or_zero, row_norms

WORK = torch.float64  # iterates, Newton matrices and factors (the module docstring of group_lasso_ipm.py)
_STEP_TO_BOUNDARY = 0.995


class Options(NamedTuple):
    smooth: bool  # lambda1 > 0 somewhere: the group pairs' model (else K = X X^T carries f)
    sync_free: bool
    smoothing: float
    width: Optional[int] = None  # sync-free, lambda1 > 0: rank-one groups gathered to this width (None: all D)


def evaluate(c, o: Options, beta: Tensor, excess: Optional[Tensor]):
    """grad f, (primal, dual, gap), V, its row norms and the gradient of the Newton model at
    beta (with the group pairs' excess [B, D]): one product with X^T and one with X (true
    and model scores side by side)."""
    X, Y, l1, l2, s = c["X"], c["Y"], c["l1"], c["l2"], o.smoothing
    if not o.smooth:
        Z, sq, l21 = scores(X, Y, beta, l1, l2, c["K"], norms=True)
        g = gradient_from_scores(Y, beta, l2, s, Z)
        return g, gap_from_scores(Y, beta, l1, l2, s, Z, sq, l21), None, None, g
    W = Y.shape[-1]
    V = correlations(X, Y - beta)
    n = row_norms(V)
    inv_n = reciprocal_or_zero(n)
    # U = BST(V, lambda1) from the row norms at hand: scale_j = (1 - lambda1 / ||V_j||)_+
    # (1 where lambda1 = 0 or V_j = 0), ||U_j|| = scale_j ||V_j||
    shrink = torch.addcmul(torch.ones_like(n), c["l1x"][:, :, 0], inv_n, value=-1.0).clamp_min_(0.0)
    U = shrink[..., None] * V
    ZZ = feature_products(X, torch.cat([U, model_shrink(V, inv_n, excess, c["l1x"])], -1)).to(WORK) / l2
    Z, Zm = ZZ[..., :W], ZZ[..., W:]
    u_norms = shrink * n
    gaps = gap_from_scores(Y, beta, l1, l2, s, Z, (u_norms * u_norms).sum(-1).to(WORK), u_norms.sum(-1).to(WORK))
    return gradient_from_scores(Y, beta, l2, s, Z), gaps, V, n, gradient_from_scores(Y, beta, l2, s, Zm)


def newton_system(st, c, o: Options):
    """The factorised Newton system at the state's point (ipm_systems.py)."""
    z, beta = st["z"], st["beta"]
    if not o.smooth:
        return KroneckerSystem(c["A"], z / beta, st["ridge"])
    carried = tuple(st[k] for k in _CURVATURE) if _CURVATURE[0] in st else None
    factors = hessian_factors(c["X"], c["Y"], beta, c["l1"], c["l2"], o.smoothing, V=st["V"],
                              gather=not o.sync_free, pairs=(st["excess"], st["slack"]), width=o.width,
                              norms=st["norms"], curvature_at_beta=carried)
    return NullSpaceSystem(factors, z / beta, st["ridge"], basis=c["N"])


def iteration(st, c, o: Options, system=None):
    """One interior-point iteration: the state dict (beta, nu, z, their evaluation, ridge,
    done; V and the group pairs for lambda1 > 0) after it. Finished tasks (``done``) keep
    their point. Reads nothing but its arguments, so that graph_loop.py can capture it;
    ``system`` may come factorised."""
    beta, z, ridge = st["beta"], st["z"], st["ridge"]
    X, Y, l1, l2, s = c["X"], c["Y"], c["l1"], c["l2"], o.smoothing
    system = newton_system(st, c, o) if system is None else system
    pairs = GroupPairs(X, st["V"], st["norms"], st["excess"], st["slack"], l1, l2, c["on"]) if o.smooth else None
    step = newton_direction(system, beta, z, st["gm"] + st["nu"] - z, c["floor"], pairs)
    ridge = torch.where(system.ok, ridge, ridge * 1e4)
    step.alpha = alpha = torch.where(st["done"][:, None, None], 0.0, step.alpha)
    evaluation = None
    if o.smooth and not o.sync_free:  # the chosen point comes evaluated
        alpha, evaluation, merit, point = backtrack(functools.partial(evaluate, c, o), l1, l2, c["on"], st, step)
    else:
        if o.smooth:
            alpha, merit = batched_line_search(X, Y, l1, l2, c["on"], s, st, step)
        point = point_after(st, step, alpha, o.smooth)
    beta = point[0]
    out = dict(beta=beta, nu=point[1], z=point[2], ridge=ridge, done=st["done"])
    if o.smooth:
        out.update(excess=point[3], slack=point[4])
    _, (p, d, gap), V, n, gm = evaluate(c, o, beta, out.get("excess")) if evaluation is None else evaluation
    out.update(p=p, d=d, gap=gap, gm=gm)
    if o.smooth:
        out.update(V=V, norms=n, merit=merit)
    if "count" in st:  # the sync-free gather's width is read from it at the check
        out.update(carried_curvature(V, n, l1, out["excess"], out["slack"]))
    return out


def advance(st, c, o: Options) -> None:
    """state <- iteration(state, consts), written into the state's own tensors (what
    graph_loop.py keeps): compiled, each value is stored where the loop keeps it by the
    kernel that makes it, not copied there by one more kernel. An output that is another
    key's input is copied first, as that input may be overwritten before it is read."""
    new = iteration(st, c, o)
    new = {k: v.clone() if any(v is t for j, t in st.items() if j != k) else v for k, v in new.items()}
    for k, v in new.items():
        if v is not st[k]:
            st[k].copy_(v)


class CompiledIteration:
    """``step(state, consts) -> state`` for graph_loop.py: ``iteration`` with options
    ``o``, compiled (compiled.py), written into ``state``'s tensors (returns ``state``)."""

    def __init__(self, o: Options):
        self.o = o

    def __call__(self, st, c):
        compiled_call(advance, st, c, o=self.o)
        return st


_CURVATURE = ("group_norms", "tangential", "radial", "rank_one")


def carried_curvature(V: Tensor, norms: Tensor, l1: Tensor, excess: Tensor, slack: Tensor) -> dict:
    """The Newton model's curvature per group at the point of V (row norms ``norms``) and
    the group pairs (dual_hessian.curvature), which the next Newton matrix reuses, and
    ``count``, the largest number of groups with rank-one curvature in a task: what that
    matrix gathers, read at the sync-free mode's check. On the device."""
    values = dict(zip(_CURVATURE, curvature(V, l1, (excess, slack), norms)))
    values["count"] = values["rank_one"].sum(-1).max()
    return values


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
    d_p: Optional[Tensor] = None  # the group pairs' steps [B, D] (lambda1 > 0)
    d_q: Optional[Tensor] = None


def newton_direction(system, beta: Tensor, z: Tensor, r_dual: Tensor, floor: Tensor,
                     pairs: Optional[GroupPairs] = None) -> Step:
    """Mehrotra predictor-corrector direction (docs/math.md, 6): one factorisation of the
    Newton system (ipm_systems.py) serves the affine-scaling predictor and the corrector;
    ``floor`` [B, 1, 1] is the centring floor relative to the dual residual; ``pairs``
    the group pairs of lambda1 > 0 (ipm_groups.py), whose complementarity joins mu. A task
    whose factorisation failed gets a zero step."""

    def solve(r_comp: Tensor, R: Optional[Tensor], need_nu: bool = True):
        r = torch.addcmul(minus_r_dual, r_comp, minus_inv_beta)  # -r_dual - r_comp / beta
        if pairs is not None:
            r = r + pairs.rhs(R)
        d_beta, d_nu = system.solve(r, need_nu)
        dp, dq = pairs.steps(d_beta, R) if pairs is not None else (None, None)
        return d_beta, d_nu, torch.addcmul(r_comp, z, d_beta) * minus_inv_beta, dp, dq

    def mean_comp(a: Optional[Tensor] = None, db=None, dz=None, dp=None, dq=None) -> Tensor:
        """mu at the current point, or after a step a along the direction."""
        b_, z_ = (beta, z) if a is None else (beta + a * db, z + a * dz)
        total = (b_ * z_).sum((1, 2), keepdim=True)
        if pairs is not None:
            total = total + pairs.complementarity(a, dp, dq)
        return total / count

    count = beta.shape[1] * beta.shape[2] + (pairs.count if pairs is not None else 0)
    bounds = Bounds(beta, z, pairs)
    minus_r_dual, minus_inv_beta = -r_dual, bounds.minus_inv_beta  # shared by both solves
    comp = beta * z
    mu = mean_comp()
    R = pairs.p * pairs.q if pairs is not None else None
    db, _, dz, dp, dq = solve(comp, R, need_nu=False)  # predictor (affine scaling)
    a_aff = bounds.max_step(db, dz, 1.0, dp, dq)
    mu_aff = mean_comp(a_aff, db, dz, dp, dq)
    sigma = (mu_aff / mu).clamp(0.0, 1.0) ** 3
    # a floor under the centring target: the dual residual re-created by the model's
    # error is not chased with a smaller complementarity (math.md 6)
    target = torch.maximum(sigma * mu, floor * r_dual.abs().amax((1, 2), keepdim=True)).minimum(mu)
    if pairs is not None:
        R = R + dp * dq - pairs.l2 * target[..., 0]
    db, dnu, dz, dp, dq = solve(comp + db * dz - target, R)  # corrector + centring
    alpha = bounds.max_step(db, dz, _STEP_TO_BOUNDARY, dp, dq)
    good = system.ok & (alpha == alpha)  # alpha is in [0, 1] or NaN
    alpha, db, dnu, dz = (torch.where(good, t, 0.0) for t in (alpha, db, dnu, dz))
    if pairs is not None:
        dp, dq = (torch.where(good[..., 0], t, 0.0) for t in (dp, dq))
    return Step(db, dnu, dz, alpha, dp, dq)


class Bounds:
    """The step to the boundary of beta, z >= 0 (and the group pairs' p, q > 0) from one
    point, for several directions: 1 / x is formed once, and its beta part, -1 / beta
    [B, S, W], serves the Newton solves too."""

    def __init__(self, beta: Tensor, z: Tensor, pairs: Optional[GroupPairs] = None):
        B = beta.shape[0]
        x = [beta.reshape(B, -1), z.reshape(B, -1)] + ([pairs.p, pairs.q] if pairs is not None else [])
        self.minus_inv_x = torch.cat(x, -1).reciprocal_().neg_()
        self.minus_inv_beta = self.minus_inv_x[:, : beta[0].numel()].view(beta.shape)

    def max_step(self, db: Tensor, dz: Tensor, fraction: float,
                 dp: Optional[Tensor] = None, dq: Optional[Tensor] = None) -> Tensor:
        """The largest alpha <= 1 with beta + alpha db >= (1 - fraction) beta and the same
        for z (and p, q), per task [B, 1, 1]."""
        B = db.shape[0]
        dx = [db.reshape(B, -1), dz.reshape(B, -1)] + ([dp, dq] if dp is not None else [])
        # the largest relative decrease t = max(-dx / x), then alpha = fraction / t, at
        # most 1 (a NaN in the direction gives a NaN alpha, which the caller turns into
        # a zero step)
        t = (torch.cat(dx, -1) * self.minus_inv_x).amax(-1)
        return (fraction / t.clamp_min(fraction))[:, None, None]
