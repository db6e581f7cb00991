"""Batched first-order solver of the group-Lasso SVM dual: FISTA with gradient restart
and an exact row-wise simplex projection (docs/math.md, 6), every task stopping on its
own relative duality gap (docs/math.md, 4).

The interior-point solver (group_lasso_ipm.py) is the default; this one is kept as the
plain-PyTorch twin that tests compare against, as the iteration that the unrolled
gradient replays (fewshot_sparse.implicit) and for warm-started sweeps. Its iteration
count grows with the conditioning of X X^T: thousands on non-negative features.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import Tensor

from fewshot_sparse.solvers.group_lasso_dual import (
    Scalar,
    check_inputs,
    check_lambdas,
    dual_gradient,
    duality_gap,
    gram,
    lipschitz_constant,
    task_param,
)
from fewshot_sparse.solvers.group_lasso_newton import face_newton_step
from fewshot_sparse.solvers.info import SolverInfo
from fewshot_sparse.solvers.prox import project_rows_to_simplex


# ----------------------------------------------------------------------------------------
# one FISTA step (docs/math.md, 6)
# ----------------------------------------------------------------------------------------
def fista_step(X, Y, l1, l2, step, smoothing, x, y, t, K=None):
    """x+ = proj(y - step * grad f(y)); momentum with gradient restart (O'Donoghue & Candes
    2015): a task restarts (t = 1, y = x+) when <y - x+, x+ - x> > 0. Returns (x+, y+, t+)."""
    x_new = project_rows_to_simplex(y - step * dual_gradient(X, Y, y, l1, l2, smoothing, K))
    d = x_new - x
    restart = ((y - x_new) * d).sum((1, 2), keepdim=True) > 0
    t_new = 0.5 * (1.0 + torch.sqrt(1.0 + 4.0 * t * t))
    mom = torch.where(restart, torch.zeros_like(t), (t - 1.0) / t_new)
    t_new = torch.where(restart, torch.ones_like(t), t_new)
    return x_new, x_new + mom * d, t_new


def newton_step(X, Y, l1, l2, step, smoothing, x, K=None):
    """One projected-Newton step (docs/math.md, 6): a projected gradient step identifies
    the face (free entries F, active groups A), then face_newton_step solves the reduced
    KKT system on it."""
    base = project_rows_to_simplex(x - step * dual_gradient(X, Y, x, l1, l2, smoothing, K))
    return face_newton_step(X, Y, base, base > 0, l1, l2, smoothing, K)


# ----------------------------------------------------------------------------------------
# the solver
# ----------------------------------------------------------------------------------------
@dataclass
class FistaSolver:
    """Hyperparameters of the batched dual solver (jaxopt style: no state on ``self``).

    tol          relative duality gap target (P - D) / max(|P|, 1), per task
    max_iter     iteration cap; a task that hits it is reported ``converged = False``
    smoothing    s >= 0, the (s / (2 lambda2)) ||beta - Y||^2 dual term (s = 1, lambda1 = 0
                 is MetaOptNet's SVM-CS QP with its +I stabiliser, C = 1 / lambda2)
    check_every  the gap (one primal evaluation) is computed every k iterations
    polish       at a check, tasks whose relative gap is below ``polish_below`` (and above
                 ``tol``) get up to ``polish_steps`` projected-Newton steps on their current
                 face (docs/math.md, 6), each kept only where it lowers the gap; a step costs
                 one dense (S W)^3 solve per task; an accepted one counts as one iteration.
                 After a step that helps no task, the next attempt waits twice as many checks.
                 The default threshold makes it a high-accuracy tool (tol < 1e-5: tests,
                 references, exact implicit gradients); at tol ~ 1e-4 plain FISTA is cheaper
                 on CPU.
    """

    tol: float = 1e-4
    max_iter: int = 2000
    smoothing: float = 0.0
    check_every: int = 10
    polish: bool = True
    polish_below: float = 1e-5
    polish_steps: int = 3

    def __post_init__(self) -> None:
        if self.tol < 0 or self.max_iter < 0 or self.smoothing < 0 or self.check_every < 1:
            raise ValueError(f"invalid solver settings {self}")

    def run(
        self, X: Tensor, Y: Tensor, lambda1: Scalar, lambda2: Scalar, beta0: Optional[Tensor] = None
    ) -> Tuple[Tensor, SolverInfo]:
        """Solve B tasks at once. X [B, S, D], Y [B, S, W] one-hot; lambda1 / lambda2 of
        shape [] or [B]; beta0 [B, S, W] a warm start (projected onto the simplex rows;
        default Y). Returns beta [B, S, W] and the per-task SolverInfo. No autograd."""
        with torch.no_grad():
            return self._run(X, Y, lambda1, lambda2, beta0)

    def _run(self, X, Y, lambda1, lambda2, beta0):
        check_inputs(X, Y)
        B = X.shape[0]
        l1 = task_param(lambda1, B, X).detach()
        l2 = task_param(lambda2, B, X).detach()
        check_lambdas(l1, l2)
        X, Y = X.detach(), Y.detach()
        x = Y.clone() if beta0 is None else project_rows_to_simplex(beta0.detach().to(X))
        G = gram(X)
        step = 1.0 / lipschitz_constant(X, l2, self.smoothing, G)
        # lambda1 = 0 in every task and S <= D: work with K = X X^T in the S-space
        K = G if (X.shape[1] <= X.shape[2] and not bool((l1 > 0).any())) else None

        beta_out = x.clone()
        iters = torch.zeros(B, dtype=torch.long, device=X.device)
        primal = torch.zeros(B, dtype=X.dtype, device=X.device)
        dual, gap = torch.zeros_like(primal), torch.zeros_like(primal)

        # Tasks still running; converged ones are dropped from the working batch (their
        # results are already written), so the remaining ones run on a compact batch.
        idx = torch.arange(B, device=X.device)
        Xa, Ya, l1a, l2a, sa, Ka = X, Y, l1, l2, step, K
        y, t = x, torch.ones_like(l2)
        newton = torch.zeros_like(iters)  # accepted Newton steps per running task
        k = 0  # FISTA iterations of the running tasks
        polish_at, polish_wait = 0, 1  # back-off of the Newton polish (in checks)
        while True:
            if k % self.check_every == 0 or k >= self.max_iter:
                p, d, g = duality_gap(Xa, Ya, x, l1a, l2a, self.smoothing, Ka)
                if self.polish and k < self.max_iter and k >= polish_at:
                    for _ in range(self.polish_steps):
                        want = (g > self.tol) & (g < self.polish_below)
                        if not bool(want.any()):
                            break
                        xn = newton_step(Xa, Ya, l1a, l2a, sa, self.smoothing, x, Ka)
                        pn, dn, gn = duality_gap(Xa, Ya, xn, l1a, l2a, self.smoothing, Ka)
                        better = want & (gn < g)
                        if not bool(better.any()):
                            polish_at = k + polish_wait * self.check_every
                            polish_wait *= 2
                            break
                        polish_wait = 1
                        b3 = better[:, None, None]
                        x, y = torch.where(b3, xn, x), torch.where(b3, xn, y)
                        t = torch.where(b3, torch.ones_like(t), t)
                        p, d, g = torch.where(better, pn, p), torch.where(better, dn, d), torch.where(better, gn, g)
                        newton = newton + better.to(newton.dtype)
                done = (g <= self.tol) | (k >= self.max_iter)
                if bool(done.any()):  # the only host sync, once per check
                    di = idx[done]
                    beta_out[di] = x[done]
                    iters[di] = k + newton[done]
                    primal[di], dual[di], gap[di] = p[done], d[done], g[done]
                    if bool(done.all()):
                        break
                    keep = ~done
                    idx, x, y, t, newton = idx[keep], x[keep], y[keep], t[keep], newton[keep]
                    Xa, Ya, l1a, l2a, sa = Xa[keep], Ya[keep], l1a[keep], l2a[keep], sa[keep]
                    Ka = None if Ka is None else Ka[keep]
            x, y, t = fista_step(Xa, Ya, l1a, l2a, sa, self.smoothing, x, y, t, Ka)
            k += 1

        info = SolverInfo(iterations=iters, primal=primal, dual=dual, gap=gap, converged=gap <= self.tol)
        return beta_out, info
