"""Batched primal-dual interior-point solver of the group-Lasso SVM dual (docs/math.md, 6).

    min_beta f(beta)  s.t.  E beta = 1 (row sums), beta >= 0,     f from group_lasso_dual.py

Mehrotra predictor-corrector on the perturbed KKT system

    grad f(beta) + E^T nu - z = 0,   beta * z = sigma mu,   beta, z > 0,

with Newton matrices M = H(beta) + diag(z / beta), H the (generalized, for lambda1 > 0)
Hessian of f. beta starts at the simplex centre and stays on the affine set E beta = 1,
so every iterate is dual-feasible and D(beta) is a certified lower bound: each task stops
on its own true relative duality gap, as the first-order solver does. The iteration
count does not depend on the conditioning of X X^T (a few dozen at most), which is
what makes non-negative backbone features tractable.

GPU-first: all tasks of the batch run in lockstep, finished ones are frozen by a mask
(no shape changes); with ``sync_free`` (the default off the CPU) the only host
synchronisation is the convergence check every ``check_every`` iterations, and on CUDA
each iteration (``_iteration``, a function of its state and constants only) is replayed
as one captured CUDA graph (graph_loop.py). Dtype policy: products with the features run
in X's dtype (float32 for float32 features), everything of size S W (iterates, Newton
matrices, Cholesky factors) in float64, where the barrier's 1e±12 diagonal spread needs it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import NamedTuple, Optional, Tuple

import torch
from torch import Tensor

from fewshot_sparse.solvers.group_lasso_dual import (
    Scalar,
    check_inputs,
    check_lambdas,
    correlations,
    duality_gap,
    safe_groups,
    gap_from_scores,
    gradient_from_scores,
    scores,
    shrunk_norms,
    task_param,
)
from fewshot_sparse.solvers.dual_hessian import hessian_factors
from fewshot_sparse.solvers.group_lasso_newton import face_newton_step
from fewshot_sparse.solvers.info import SolverInfo
from fewshot_sparse.solvers.ipm_line_search import backtrack, batched_line_search
from fewshot_sparse.solvers.graph_loop import graph_loop
from fewshot_sparse.solvers.ipm_systems import KroneckerSystem, NullSpaceSystem, class_block, sum_zero_basis
from fewshot_sparse.solvers.prox import block_soft_threshold, project_rows_to_simplex, smooth_shrink

WORK = torch.float64
_STEP_TO_BOUNDARY = 0.995
_RESIDUAL_FLOOR = {False: 1e-3, True: 1e-4}  # without / with the smoothed model
_COMPACT_BELOW = 0.75  # drop screened columns once they are a quarter of those left
_SMOOTHING = 0.003  # eps / lambda1 at the start; then eps shrinks as sqrt(mu / mu_0)
_START_SCALE = {False: 0.01, True: 0.3}  # z0 / spread, lambda1 = 0 / > 0 (measured, math.md 6)


@dataclass
class InteriorPointSolver:
    """Hyperparameters of the batched interior-point solver (no state on ``self``).

    tol           relative duality gap target (P - D) / max(|P|, 1), per task
    max_iter      Newton-iteration cap; a task that hits it is reported ``converged = False``
    smoothing     s >= 0, the (s / (2 lambda2)) ||beta - Y||^2 dual term
    check_every   the convergence test (one host sync) runs every k iterations
    polish_below  below this gap, each check also tries a face-Newton step from the current
                  iterate onto the face it has identified (free: beta > z); a task whose
                  polished point meets ``tol`` stops there. This is the crossover that
                  gives machine-precision solutions (tol ~ 1e-12) in one or two more steps.
    sync_free     no host synchronisation between checks (default: on any device but the
                  CPU): for lambda1 > 0 the Hessian carries every group, masked, instead of
                  gathering the active ones, the line search evaluates all its candidates
                  at once, and screening does not compact. Same iterates, more flops.
    cuda_graph    keep the iterates in static buffers and replay each iteration as one
                  captured CUDA graph (graph_loop.py; default: on CUDA in the sync-free
                  mode). Off CUDA, True runs the same buffers uncaptured, the twin the
                  tests compare against. Same iterates, one launch per iteration.
    """

    tol: float = 1e-4
    max_iter: int = 60
    smoothing: float = 0.0
    check_every: int = 1
    polish_below: float = 1e-5
    sync_free: Optional[bool] = None
    cuda_graph: Optional[bool] = None

    def __post_init__(self) -> None:
        if not (self.tol >= 0 and self.max_iter >= 0 and self.smoothing >= 0 and self.check_every >= 1):
            raise ValueError(f"invalid solver settings {self}")

    def run(
        self, X: Tensor, Y: Tensor, lambda1: Scalar, lambda2: Scalar, beta0: Optional[Tensor] = None
    ) -> Tuple[Tensor, SolverInfo]:
        """Solve B tasks at once. X [B, S, D], Y [B, S, W] one-hot; lambda1 / lambda2 of
        shape [] or [B]; beta0 [B, S, W] an optional warm start (pulled into the interior).
        Returns beta [B, S, W] in X's dtype and the per-task SolverInfo. No autograd."""
        with torch.no_grad():
            return self._run(X.detach(), Y.detach(), lambda1, lambda2, beta0)

    def _run(self, X, Y, lambda1, lambda2, beta0):
        check_inputs(X, Y)
        B, S, W = Y.shape
        l1 = task_param(lambda1, B, X).detach().to(WORK)
        l2 = task_param(lambda2, B, X).detach().to(WORK)
        check_lambdas(l1, l2)
        s = self.smoothing
        Yw = Y.to(WORK)
        c = dict(X=X, Y=Yw, l1=l1, l2=l2)
        # lambda1 = 0 in every task and S <= D: f is quadratic, K = X X^T carries it all
        K = None
        if X.shape[1] <= X.shape[2] and not bool((l1 > 0).any()):
            Xw = X.to(WORK)
            c["K"] = K = torch.bmm(Xw, Xw.transpose(1, 2))
            c["A"] = class_block(K, l2, s)  # H in class blocks
        # lambda1 > 0: the Newton steps follow a model of f whose group kinks are rounded
        # over eps, shrinking with the complementarity (docs/math.md, 6); the gaps, the
        # stopping test and the polish use f itself
        smooth = K is None
        sync_free = X.device.type != "cpu" if self.sync_free is None else self.sync_free
        graph = (sync_free and X.device.type == "cuda") if self.cuda_graph is None else self.cuda_graph
        if graph and not sync_free:
            raise ValueError("cuda_graph=True needs the sync-free mode (sync_free=None or True)")
        o = _Options(smooth, sync_free, s, _RESIDUAL_FLOOR[smooth])
        # gap-safe screening (s > 0, lambda1 > 0): certified-zero groups leave the features
        screen = s > 0 and smooth and not sync_free and bool((l1 > 0).any())
        col_norms = torch.linalg.vector_norm(X, dim=1).to(WORK) if screen else None
        if smooth:
            c["l1x"] = l1.to(X.dtype)
            c["eps0"] = _SMOOTHING * c["l1x"]  # [B, 1, 1]
            c["N"] = sum_zero_basis(W, WORK, X.device)

        beta = torch.full_like(Yw, 1.0 / W)
        if beta0 is not None:  # a warm start that already meets tol is the answer; else an
            b0 = project_rows_to_simplex(beta0.detach().to(WORK))  # interior point near it
            start = (b0, duality_gap(X, Yw, b0, l1, l2, s, K))
            beta = 0.99 * b0 + 0.01 * beta
        eps = c.get("eps0")
        g, (p, d, gap), V, gm = _evaluate(c, o, beta, eps)
        # multipliers' start (docs/math.md, 6): z = theta * spread_i on every entry of row
        # i, nu_i the row mean of z - grad; the dual residual starts at the gradient's
        # deviation from its row mean, and mu0 is a fraction of what a feasible z gives
        spread = (gm.amax(-1, keepdim=True) - gm.amin(-1, keepdim=True)).clamp_min(1e-3 * (1.0 + gm.abs().amax((1, 2), keepdim=True)))
        z = _START_SCALE[smooth] * spread.expand_as(gm)
        nu = (z - gm).mean(-1, keepdim=True)
        c["mu0"] = (beta * z).mean((1, 2), keepdim=True)

        out_beta, out = beta.clone(), (p.clone(), d.clone(), gap.clone())
        if beta0 is not None:
            out_beta, out = _keep(start[1][2] <= out[2], start[0], out_beta, start[1], out)
        iters = torch.zeros(B, dtype=torch.long, device=X.device)
        done = torch.zeros(B, dtype=torch.bool, device=X.device)
        ridge = torch.full((B, 1, 1), 1e-14, dtype=WORK, device=X.device)
        state = dict(beta=beta, nu=nu, z=z, g=g, p=p, d=d, gap=gap, gm=gm, ridge=ridge, done=done)
        if smooth:
            state.update(V=V, eps=eps)
        if graph:  # static buffers, replayed as one CUDA graph per iteration on CUDA
            key = (X.device, X.dtype, tuple(X.shape), W, o, tuple(sorted(c)))
            loop = graph_loop(key, functools.partial(_iteration, o=o), state, c)
        else:
            loop = _EagerLoop(state, c, o)
        st = loop.state
        for k in range(self.max_iter + 1):
            if k % self.check_every == 0 or k == self.max_iter:
                p, d, gap, beta = st["p"], st["d"], st["gap"], st["beta"]
                better = ~done & (gap < out[2])
                out_beta, out = _keep(better, beta, out_beta, (p, d, gap), out)
                iters = torch.where(better, k, iters)
                want = ~done & (out[2] > self.tol) & (gap < self.polish_below)
                if k > 0 and bool(want.any()):
                    out_beta, out, polished = self._polish(loop.consts["X"], Yw, beta, st["z"], l1, l2, K, want, out_beta, out)
                    iters = torch.where(polished, k + 1, iters)
                done = done | (out[2] <= self.tol)
                if bool(done.all()) or k == self.max_iter:  # the only host sync
                    break
                loop.write(done=done)
                if screen:
                    keep = safe_groups(st["V"], col_norms, l1, l2, s, p - d)
                    if int(keep.sum(-1).max()) <= _COMPACT_BELOW * keep.shape[-1]:
                        loop.consts["X"], V, col_norms = _compact(keep, loop.consts["X"], st["V"], col_norms)
                        loop.write(V=V)
            loop.step()
            st = loop.state

        beta_out = out_beta / out_beta.sum(-1, keepdim=True)  # exact row sums (round-off)
        info = SolverInfo(iterations=iters, primal=out[0], dual=out[1], gap=out[2], converged=out[2] <= self.tol)
        return beta_out.to(X.dtype), _info_to(info, X.dtype)

    def _polish(self, X, Yw, beta, z, l1, l2, K, want, out_beta, out):
        """Face-Newton candidates from the current iterate, kept where they lower the gap."""
        free = (beta > z) | (beta == beta.amax(-1, keepdim=True))
        cand = face_newton_step(X, Yw, beta, free, l1, l2, self.smoothing, K)
        pc, dc, gc = duality_gap(X, Yw, cand, l1, l2, self.smoothing, K)
        better = want & (gc < out[2])
        out_beta, out = _keep(better, cand, out_beta, (pc, dc, gc), out)
        return out_beta, out, better


class _Options(NamedTuple):
    smooth: bool  # lambda1 > 0 somewhere: the smoothed model (else K = X X^T carries f)
    sync_free: bool
    smoothing: float
    floor: float  # the centring floor, relative to the dual residual


def _evaluate(c, o: _Options, beta: Tensor, eps: Optional[Tensor]):
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


def _eps_of(c, beta: Tensor, z: Tensor) -> Tensor:
    """The smoothing [..., B, 1, 1]: shrinks like sqrt(mu) from _SMOOTHING lambda1."""
    mu = (beta * z).mean((-2, -1), keepdim=True)
    return c["eps0"] * torch.sqrt(mu / c["mu0"]).clamp(max=1.0).to(c["X"].dtype)


def _newton_system(st, c, o: _Options):
    """The factorised Newton system at the state's point (ipm_systems.py)."""
    z, beta = st["z"], st["beta"]
    if not o.smooth:
        return KroneckerSystem(c["A"], z / beta, st["ridge"])
    factors = hessian_factors(c["X"], c["Y"], beta, c["l1"], c["l2"], o.smoothing, V=st["V"],
                              gather=not o.sync_free, eps=st["eps"])
    return NullSpaceSystem(factors, z / beta, st["ridge"], basis=c["N"])


def _iteration(st, c, o: _Options, system=None):
    """One interior-point iteration: the state dict (beta, nu, z, their evaluation, ridge,
    done) after it. Finished tasks (``done``) keep their point. Reads nothing but its
    arguments, so that graph_loop.py can capture it; ``system`` may come factorised."""
    beta, nu, z, gm, ridge = st["beta"], st["nu"], st["z"], st["gm"], st["ridge"]
    X, Y, l1, l2, s = c["X"], c["Y"], c["l1"], c["l2"], o.smoothing
    system = _newton_system(st, c, o) if system is None else system
    step = _newton_direction(system, beta, z, gm + nu - z, o.floor)
    ridge = torch.where(system.ok, ridge, ridge * 1e4)
    step.alpha = alpha = torch.where(st["done"][:, None, None], 0.0, step.alpha)
    evaluation = None
    eps_of = functools.partial(_eps_of, c)
    if o.smooth and o.sync_free:
        alpha = batched_line_search(X, Y, l1, l2, s, eps_of, beta, nu, z, gm, step)
    elif o.smooth:  # the chosen point comes evaluated
        alpha, evaluation = backtrack(functools.partial(_evaluate, c, o), eps_of, beta, nu, z, gm, step)
    beta = beta + alpha * step.d_beta
    z = z + alpha * step.d_z
    eps = eps_of(beta, z) if o.smooth else None
    g, (p, d, gap), V, gm = _evaluate(c, o, beta, eps) if evaluation is None else evaluation
    out = dict(beta=beta, nu=nu + alpha * step.d_nu, z=z, g=g, p=p, d=d, gap=gap, gm=gm, ridge=ridge, done=st["done"])
    if o.smooth:
        out.update(V=V, eps=eps)
    return out


class _EagerLoop:
    """graph_loop.GraphLoop's interface without static buffers (the CPU path, where
    screening may shrink the features between iterations)."""

    def __init__(self, state, consts, options: _Options):
        self.state, self.consts, self._options = state, consts, options

    def write(self, **values: Tensor) -> None:
        self.state.update(values)

    def step(self) -> None:
        # the previous factor is freed only once the new one exists: freed first, glibc
        # returns its pages to the OS and every later touch faults (measured on 8 tasks,
        # 15-shot, D = 640: 140,000 faults a solve instead of 30,000, 25% more time)
        system = _newton_system(self.state, self.consts, self._options)
        self._system = system
        self.state = _iteration(self.state, self.consts, self._options, system)


@dataclass
class _Step:
    d_beta: Tensor
    d_nu: Tensor
    d_z: Tensor
    alpha: Tensor  # [B, 1, 1] step length (fraction to the boundary)


def _newton_direction(system, beta: Tensor, z: Tensor, r_dual: Tensor, floor: float) -> _Step:
    """Mehrotra predictor-corrector direction (docs/math.md, 6): one factorisation of the
    Newton system (ipm_systems.py) serves the affine-scaling predictor and the corrector.
    A task whose factorisation failed gets a zero step."""

    def solve(r_comp: Tensor, need_nu: bool = True) -> Tuple[Tensor, Optional[Tensor], Tensor]:
        d_beta, d_nu = system.solve(-r_dual - r_comp / beta, need_nu)
        return d_beta, d_nu, -(r_comp + z * d_beta) / beta

    comp = beta * z
    mu = comp.mean((1, 2), keepdim=True)
    db, _, dz = solve(comp, need_nu=False)  # predictor (affine scaling)
    a_aff = _max_step(beta, db, z, dz, 1.0)
    mu_aff = ((beta + a_aff * db) * (z + a_aff * dz)).mean((1, 2), keepdim=True)
    sigma = (mu_aff / mu).clamp(0.0, 1.0) ** 3
    # lambda1 > 0: grad f is only piecewise smooth, so the dual residual is re-created by
    # the model error where a group crosses its threshold; complementarity is not driven
    # below that residual, or the iterates would commit to a face too early and stall
    target = torch.maximum(sigma * mu, floor * r_dual.abs().amax((1, 2), keepdim=True)).minimum(mu)
    db, dnu, dz = solve(comp + db * dz - target)  # corrector + centring
    alpha = _max_step(beta, db, z, dz, _STEP_TO_BOUNDARY)
    bad = ~system.ok | ~torch.isfinite(alpha)
    alpha, db, dnu, dz = (torch.where(bad, 0.0, t) for t in (alpha, db, dnu, dz))
    return _Step(db, dnu, dz, alpha)


def _max_step(beta: Tensor, db: Tensor, z: Tensor, dz: Tensor, fraction: float) -> Tensor:
    """The largest alpha <= 1 with beta + alpha db >= (1 - fraction) beta and the same for
    z, per task [B, 1, 1]."""
    x, dx = torch.cat([beta, z], -1), torch.cat([db, dz], -1)  # one pass over both
    return (fraction * torch.where(dx < 0, -x / dx, float("inf")).amin((1, 2), keepdim=True)).clamp(max=1.0)


def _compact(keep: Tensor, X: Tensor, V: Tensor, col_norms: Tensor):
    """Keep the columns ``keep`` [B, D] of X [B, S, D] (rows of V [B, D, W], entries of
    col_norms [B, D]); tasks with fewer kept columns are padded with zero columns, which
    are never active."""
    m = int(keep.sum(-1).max())
    order = torch.argsort(keep.to(torch.int8), dim=-1, descending=True, stable=True)[:, :m]
    kept = torch.gather(keep, 1, order)
    Xc = torch.gather(X, 2, order[:, None, :].expand(-1, X.shape[1], -1)) * kept[:, None, :]
    Vc = torch.gather(V, 1, order[..., None].expand(-1, -1, V.shape[-1])) * kept[..., None]
    return Xc, Vc, torch.gather(col_norms, 1, order) * kept


def _keep(mask: Tensor, beta: Tensor, out_beta: Tensor, vals, out):
    m3 = mask[:, None, None]
    return torch.where(m3, beta, out_beta), tuple(torch.where(mask, v, o) for v, o in zip(vals, out))


def _info_to(info: SolverInfo, dtype: torch.dtype) -> SolverInfo:
    return SolverInfo(
        iterations=info.iterations, primal=info.primal.to(dtype), dual=info.dual.to(dtype),
        gap=info.gap.to(dtype), converged=info.converged,
    )
