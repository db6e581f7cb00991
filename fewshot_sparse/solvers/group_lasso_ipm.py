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
each iteration (ipm_iteration.py, a function of its state and constants only) is replayed
as one captured CUDA graph (graph_loop.py). Dtype policy: products with the features run
in X's dtype (float32 for float32 features), everything of size S W (iterates, Newton
matrices, Cholesky factors) in float64, where the barrier's 1e±12 diagonal spread needs it;
beta comes back in float64.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import Tensor

from fewshot_sparse.solvers.compiled import compiled_call, maybe_compiled
from fewshot_sparse.solvers.dual_hessian import static_width
from fewshot_sparse.solvers.graph_loop import graph_loop
from fewshot_sparse.solvers.group_lasso_dual import (
    LAMBDA_ERROR,
    Scalar,
    check_inputs,
    duality_gap,
    safe_groups,
    solve_flags,
    task_param,
)
from fewshot_sparse.solvers.group_lasso_newton import face_newton_step
from fewshot_sparse.solvers.info import SolverInfo, info_to
from fewshot_sparse.solvers.ipm_groups import central_pairs
from fewshot_sparse.solvers.ipm_iteration import WORK, CompiledIteration, EagerLoop, Options, iteration
from fewshot_sparse.solvers.ipm_line_search import state_merit
from fewshot_sparse.solvers.ipm_start import first_point, interior_start, per_task
from fewshot_sparse.solvers.ipm_systems import class_block, sum_zero_basis

_RESIDUAL_FLOOR = {False: 1e-3, True: 1e-4}  # lambda1 = 0 / > 0 (the model's residual)
_COMPACT_BELOW = 0.75  # drop screened columns once they are a quarter of those left
_STALL_CHECKS = 8  # checks without the best gap halving, near the rounding floor: stalled
_STALL_NEAR = 30.0  # "near": within this factor of the estimate (real stalls: 2-20, math.md 6)


@dataclass
class InteriorPointSolver:
    """Hyperparameters of the batched interior-point solver (no state on ``self``).

    tol           relative duality gap target (P - D) / max(|P|, 1), per task
    max_iter      Newton-iteration cap; a task that hits it, or stalls near the rounding
                  floor of float32 features (math.md 6, "Dtypes"), is reported
                  ``converged = False``
    smoothing     s >= 0, the (s / (2 lambda2)) ||beta - Y||^2 dual term
    check_every   the convergence test (one host sync) runs every k iterations
    polish_below  below this gap, each check also tries a face-Newton step from the current
                  iterate onto the face it has identified (free: beta > z); a task whose
                  polished point meets ``tol`` stops there. This is the crossover that
                  gives machine-precision solutions (tol ~ 1e-12) in one or two more steps.
    sync_free     no host synchronisation between checks (default: on any device but the
                  CPU): for lambda1 > 0 the Hessian gathers the active groups to a static
                  width read at each check (check_every = 1; else it carries every group,
                  masked), the line search evaluates all its candidates at once, and
                  screening does not compact. Same iterates, more flops (math.md, 6).
    cuda_graph    keep the iterates in static buffers and replay each iteration as one
                  captured CUDA graph (graph_loop.py; default: on CUDA in the sync-free
                  mode). Off CUDA, True runs the same buffers uncaptured, the twin the
                  tests compare against. Same iterates, one launch per iteration.
    compiled      run the start, each iteration and each check through torch.compile
                  (compiled.py; sync-free mode only; off by default; the implicit
                  gradient's adjoint solve follows GroupLassoSVMDual's): a few dozen fused
                  kernels an iteration instead of a few hundred operations, the same
                  iterates to round-off, after tens of seconds of compiling per shape and
                  gather width.
    """

    tol: float = 1e-4
    max_iter: int = 60
    smoothing: float = 0.0
    check_every: int = 1
    polish_below: float = 1e-5
    sync_free: Optional[bool] = None
    cuda_graph: Optional[bool] = None
    compiled: bool = False

    def __post_init__(self) -> None:
        if not (self.tol >= 0 and self.max_iter >= 0 and self.smoothing >= 0 and self.check_every >= 1):
            raise ValueError(f"invalid solver settings {self}")

    def run(
        self, X: Tensor, Y: Tensor, lambda1: Scalar, lambda2: Scalar, beta0: Optional[Tensor] = None
    ) -> Tuple[Tensor, SolverInfo]:
        """Solve B tasks at once. X [B, S, D], Y [B, S, W] one-hot; lambda1 / lambda2 of
        shape [] or [B]; beta0 [B, S, W] an optional warm start (pulled into the interior).
        Returns beta [B, S, W] in float64, the iterates' dtype (Y - beta, from which W is
        formed, is tiny on nearly one-hot rows and would lose its digits in float32), and
        the per-task SolverInfo in X's dtype. No autograd."""
        with torch.no_grad():
            return self._run(X.detach(), Y.detach(), lambda1, lambda2, beta0)

    def _run(self, X, Y, lambda1, lambda2, beta0):
        check_inputs(X, Y)
        B, S, W = Y.shape
        l1 = task_param(lambda1, B, X).detach().to(WORK)
        l2 = task_param(lambda2, B, X).detach().to(WORK)
        flags, floor = maybe_compiled(self.compiled, solve_flags, X, l1, l2, self.tol)
        invalid, some_on, some_off, coarse = flags.tolist()  # the set-up's one host sync
        if invalid:
            raise ValueError(LAMBDA_ERROR)
        s = self.smoothing
        Yw = Y.to(WORK)
        c = dict(X=X, Y=Yw, l1=l1, l2=l2)
        # lambda1 = 0 in every task and S <= D: f is quadratic, K = X X^T carries it all
        K = None
        if X.shape[1] <= X.shape[2] and not some_on:
            Xw = X.to(WORK)
            c["K"] = K = torch.bmm(Xw, Xw.transpose(1, 2))
            c["A"] = class_block(K, l2, s)  # H in class blocks
        # lambda1 > 0: each feature group's kink is a primal-dual pair of the Newton model
        # (ipm_groups.py, docs/math.md 6); the gaps, the stopping test and the polish use f
        smooth = K is None
        out_dtype = X.dtype
        if smooth and coarse:  # weak regularisation: float32 is too coarse (needs_float64)
            X = c["X"] = X.to(WORK)
        sync_free = X.device.type != "cpu" if self.sync_free is None else self.sync_free
        graph = (sync_free and X.device.type == "cuda") if self.cuda_graph is None else self.cuda_graph
        if graph and not sync_free:
            raise ValueError("cuda_graph=True needs the sync-free mode (sync_free=None or True)")
        if self.compiled and not sync_free:
            raise ValueError("compiled=True needs the sync-free mode (sync_free=None or True)")
        o = Options(smooth, sync_free, s)
        c["floor"] = per_task(l1, _RESIDUAL_FLOOR)  # per task, as z's start below
        # gap-safe screening (s > 0, lambda1 > 0): certified-zero groups leave the features
        screen = s > 0 and smooth and not sync_free and some_on
        col_norms = torch.linalg.vector_norm(X, dim=1).to(WORK) if screen else None
        if smooth:
            c["l1x"] = l1.to(X.dtype)
            c["N"] = sum_zero_basis(W, WORK, X.device)
            c["on"] = (l1[:, :, 0] > 0).to(WORK)  # lambda1 = 0 tasks: the group pairs off

        warm = beta0 is not None  # the caller's warm start (not the lambda1 = 0 start below)
        # the tasks with lambda1 = 0 start from the minimiser on the affine set (shifted),
        # in any batch, so that a task's iterates do not depend on its batch-mates
        equality = not warm and X.shape[1] <= X.shape[2] and some_off
        start = None
        if warm or equality:
            b0, gaps, beta = maybe_compiled(self.compiled, first_point, X, Yw, None if equality else beta0.detach(),
                                            l1, l2, s, K, equality)
            start = (b0, gaps)
        else:
            beta = torch.full_like(Yw, 1.0 / W)
        # sync-free with lambda1 > 0 and a check every iteration: the rank-one groups are
        # gathered to a static width, set from their count read in each check's sync
        # (the count comes with each step's state: no extra operations at the check)
        bucketed = smooth and sync_free and self.check_every == 1
        state = maybe_compiled(self.compiled, interior_start, c, o, beta, warm, bucketed)
        out_beta, out = state["beta"].clone(), tuple(state[k].clone() for k in ("p", "d", "gap"))
        if start is not None:  # a start that already meets tol is the answer
            out_beta, out = _keep(start[1][2] <= out[2], start[0], out_beta, start[1], out)
        iters = torch.zeros(B, dtype=torch.long, device=X.device)
        done = state["done"]
        if bucketed:
            o = o._replace(width=static_width(int(state["count"]), X.shape[-1]))
        loop = _loop(graph, self.compiled, o, state, c)
        st = loop.state
        # a task whose best gap stays near X's rounding floor without halving over
        # _STALL_CHECKS checks has stalled there: it stops (unconverged; the fit then runs
        # in float64, implicit/group_lasso_svm_grad.py) rather than run to max_iter
        near_floor = _STALL_NEAR * floor if smooth and X.dtype != WORK else None
        best_gaps = []  # the best gaps of the last _STALL_CHECKS checks (near_floor only)
        check = functools.partial(compiled_call, track_best) if self.compiled else track_best
        for k in range(self.max_iter + 1):
            if k % self.check_every == 0 or k == self.max_iter:
                oldest = best_gaps[0] if len(best_gaps) == _STALL_CHECKS else None
                out_beta, out, better, want, finished, flags = check(
                    st, done, out_beta, out, oldest, near_floor, self.tol, self.polish_below, bucketed)
                iters = torch.where(better, k, iters)
                if near_floor is not None:
                    best_gaps = (best_gaps + [out[2]])[-_STALL_CHECKS:]
                polish, stop, *count = flags.tolist()  # the one host sync
                if k > 0 and polish:  # (a second one where it polishes)
                    beta = st["beta"]
                    out_beta, out, polished = self._polish(loop.consts["X"], Yw, beta, st["z"], l1, l2, K, want, out_beta, out)
                    iters = torch.where(polished, k + 1, iters)
                    finished = done | (out[2] <= self.tol)
                    stop = bool(finished.all())
                done = finished
                if stop or k == self.max_iter:
                    break
                loop.write(done=done)
                width = static_width(count[0], X.shape[-1]) if bucketed else o.width
                if width != o.width:
                    o = o._replace(width=width)
                    loop = _loop(graph, self.compiled, o, loop.state, loop.consts)
                if screen:
                    keep = safe_groups(st["V"], col_norms, l1, l2, s, st["p"] - st["d"])
                    if int(keep.sum(-1).max()) <= _COMPACT_BELOW * keep.shape[-1]:
                        loop.consts["X"], V, n, col_norms, pairs = _compact(keep, loop.consts["X"], st, col_norms, l1, l2)
                        loop.write(V=V, norms=n, excess=pairs[0], slack=pairs[1])
                        loop.write(merit=state_merit(loop.state, l1, l2, loop.consts["on"]))
            loop.step()
            st = loop.state

        beta_out = out_beta / out_beta.sum(-1, keepdim=True)  # exact row sums (round-off)
        info = SolverInfo(iterations=iters, primal=out[0], dual=out[1], gap=out[2], converged=out[2] <= self.tol)
        return beta_out, info_to(info, out_dtype)

    def _polish(self, X, Yw, beta, z, l1, l2, K, want, out_beta, out):
        """Face-Newton candidates from the current iterate, kept where they lower the gap."""
        free = (beta > z) | (beta == beta.amax(-1, keepdim=True))
        cand = face_newton_step(X, Yw, beta, free, l1, l2, self.smoothing, K)
        pc, dc, gc = duality_gap(X, Yw, cand, l1, l2, self.smoothing, K)
        better = want & (gc < out[2])
        out_beta, out = _keep(better, cand, out_beta, (pc, dc, gc), out)
        return out_beta, out, better


def _loop(graph: bool, compiled: bool, o: Options, state, consts):
    """The iteration loop for options ``o``: with ``graph`` or ``compiled``, static buffers
    (cached per shape and options), replayed as one CUDA graph per iteration where
    ``graph`` and on CUDA, with the compiled iteration where ``compiled``; else eager."""
    if not (graph or compiled):
        return EagerLoop(state, consts, o)
    X = consts["X"]
    # (the state's keys too: with a check every k > 1 iterations it carries no curvature)
    key = (X.device, X.dtype, tuple(X.shape), state["beta"].shape[-1], o, tuple(sorted(consts)), tuple(sorted(state)),
           graph, compiled)
    step = CompiledIteration(o) if compiled else functools.partial(iteration, o=o)
    # the loops of other gather widths hold the same state and constants: one set of buffers
    share = key[:4] + (o._replace(width=None),) + key[5:]
    return graph_loop(key, step, state, consts, capture=graph, share=share)


def _compact(keep: Tensor, X: Tensor, st, col_norms: Tensor, l1: Tensor, l2: Tensor):
    """Keep the columns ``keep`` [B, D] of X [B, S, D] (rows of V [B, D, W], entries of its
    row norms, of col_norms and of the group pairs [B, D]); tasks with fewer kept columns
    are padded with zero columns, which are never active (their pairs on the central path
    at V_j = 0)."""
    m = int(keep.sum(-1).max())
    order = torch.argsort(keep.to(torch.int8), dim=-1, descending=True, stable=True)[:, :m]
    kept = torch.gather(keep, 1, order)
    Xc = torch.gather(X, 2, order[:, None, :].expand(-1, X.shape[1], -1)) * kept[:, None, :]
    V = st["V"]
    Vc = torch.gather(V, 1, order[..., None].expand(-1, -1, V.shape[-1])) * kept[..., None]
    nc = torch.gather(st["norms"], 1, order) * kept
    pad = central_pairs(nc, l1, l2, (st["beta"] * st["z"]).mean((1, 2), keepdim=True))
    pairs = tuple(torch.where(kept, torch.gather(st[k], 1, order), pd) for k, pd in zip(("excess", "slack"), pad))
    return Xc, Vc, nc, torch.gather(col_norms, 1, order) * kept, pairs


def track_best(st, done: Tensor, out_beta: Tensor, out: tuple, oldest: Optional[Tensor], near_floor: Optional[Tensor],
               tol: float, polish_below: float, count: bool):
    """The check between iterations, on the device: the best point so far per task
    (out_beta, out = (primal, dual, gap)) updated with the state's, ``better`` [B] where
    that is the state's, ``want`` (unfinished tasks to polish), ``finished`` (within tol;
    or stalled: near ``near_floor`` and not below half the best gap ``oldest`` of
    _STALL_CHECKS checks before) and the flags [any want, all finished(, the state's
    rank-one count)] the host reads."""
    gap = st["gap"]
    better = ~done & (gap < out[2])
    out_beta, out = _keep(better, st["beta"], out_beta, (st["p"], st["d"], gap), out)
    want = ~done & (out[2] > tol) & (gap < polish_below)
    finished = done | (out[2] <= tol)
    if oldest is not None:
        finished = finished | ((out[2] <= near_floor) & (out[2] > 0.5 * oldest))
    flags = [want.any(), finished.all()] + ([st["count"]] if count else [])
    return out_beta, out, better, want, finished, torch.stack(flags)


def _keep(mask: Tensor, beta: Tensor, out_beta: Tensor, vals, out):
    m3 = mask[:, None, None]
    return torch.where(m3, beta, out_beta), tuple(torch.where(mask, v, o) for v, o in zip(vals, out))
