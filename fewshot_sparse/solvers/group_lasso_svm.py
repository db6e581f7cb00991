"""Batched dual solver of the group-Lasso multiclass (Crammer-Singer) SVM.

Per task (support X [S, D], one-hot labels Y [S, W], weights W [D, W], rows = features)

    P(W) = sum_i max_c [1{c != y_i} + x_i.w_c - x_i.w_{y_i}]
           + lambda1 * sum_j ||W_j,:||_2 + (lambda2 / 2) ||W||_F^2

is solved through its dual over beta [S, W] (each row in the probability simplex)

    min_beta f(beta) = ||BST(X^T (Y - beta), lambda1)||^2 / (2 lambda2) + <Y, beta>
                       [+ (s / (2 lambda2)) ||beta - Y||^2]          (docs/math.md, 2-3)

with W(beta) = BST(X^T (Y - beta), lambda1) / lambda2 and D(beta) = S - f(beta) <= P*.
The algorithm is FISTA with gradient restart and an exact row-wise simplex projection
(docs/math.md, 6); every task stops on its own relative duality gap (docs/math.md, 4).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple, Union

import torch
from torch import Tensor

from fewshot_sparse.solvers.group_lasso_kkt import dual_hessian, kkt_solve
from fewshot_sparse.solvers.info import SolverInfo
from fewshot_sparse.solvers.prox import block_soft_threshold, project_rows_to_simplex

Scalar = Union[float, Tensor]


# ----------------------------------------------------------------------------------------
# input handling
# ----------------------------------------------------------------------------------------
def task_param(lam: Scalar, B: int, ref: Tensor) -> Tensor:
    """A hyperparameter given as a float, a [] tensor or a [B] tensor -> [B, 1, 1] (a view,
    so autograd flows back to the caller's tensor)."""
    lam = torch.as_tensor(lam, dtype=ref.dtype, device=ref.device)
    if lam.dim() == 0:
        return lam.reshape(1, 1, 1).expand(B, 1, 1)
    if lam.shape == (B,):
        return lam.reshape(B, 1, 1)
    if lam.shape == (B, 1, 1):
        return lam
    raise ValueError(f"a hyperparameter must have shape [] or [{B}], got {tuple(lam.shape)}")


def check_inputs(X: Tensor, Y: Tensor) -> None:
    """Refuse malformed problems up front with a clear message."""
    if X.dim() != 3 or Y.dim() != 3:
        raise ValueError(f"X must be [B, S, D] and Y [B, S, W]; got {tuple(X.shape)} and {tuple(Y.shape)}")
    if X.shape[:2] != Y.shape[:2]:
        raise ValueError(f"X {tuple(X.shape)} and Y {tuple(Y.shape)} disagree on [B, S]")
    if Y.shape[-1] < 2:
        raise ValueError(f"need at least 2 classes, got W = {Y.shape[-1]}")
    if not X.dtype.is_floating_point or X.dtype != Y.dtype:
        raise ValueError(f"X and Y must share one floating dtype, got {X.dtype} and {Y.dtype}")
    if X.device != Y.device:
        raise ValueError(f"X and Y must be on one device, got {X.device} and {Y.device}")


# ----------------------------------------------------------------------------------------
# objectives (docs/math.md, sections 1-4)
# ----------------------------------------------------------------------------------------
def _bst_of_beta(X: Tensor, Y: Tensor, beta: Tensor, l1: Tensor) -> Tensor:
    """U = BST(X^T (Y - beta), lambda1)  [B, D, W]. V is formed as ((Y - beta)^T X)^T: the
    [W, S] x [S, D] product is several times faster on CPU than [D, S] x [S, W] with a
    transposed X, and U keeps that layout, which bmm(X, U) also prefers."""
    return block_soft_threshold(torch.bmm((Y - beta).transpose(1, 2), X).transpose(1, 2), l1)


def dual_weights(X: Tensor, Y: Tensor, beta: Tensor, lambda1: Scalar, lambda2: Scalar) -> Tensor:
    """W(beta) = BST(X^T (Y - beta), lambda1) / lambda2  [B, D, W]  (docs/math.md, 2)."""
    B = X.shape[0]
    l1, l2 = task_param(lambda1, B, X), task_param(lambda2, B, X)
    return _bst_of_beta(X, Y, beta, l1) / l2


def _scores(X, Y, beta, l1, l2, K=None, norms=False):
    """(Z = X W(beta) [B, S, W], ||U||^2 [B], sum_j ||U_j|| [B] or None) with U = lambda2 W.
    K = X X^T [B, S, S] may be given when lambda1 = 0 for every task: then W = X^T (Y - beta)
    / lambda2 and everything lives in the S-space (S^2 W instead of S D W per product)."""
    R = Y - beta
    if K is not None:
        KR = torch.bmm(K, R)
        return KR / l2, (R * KR).sum((1, 2)), (torch.zeros_like(l2[:, 0, 0]) if norms else None)
    U = block_soft_threshold(torch.bmm(R.transpose(1, 2), X).transpose(1, 2), l1)
    l21 = torch.linalg.vector_norm(U, dim=-1).sum(-1) if norms else None
    return torch.bmm(X, U) / l2, (U * U).sum((1, 2)), l21


def _loss(Z: Tensor, Y: Tensor, l2: Tensor, smoothing: float) -> Tensor:
    """Sum of the (smoothed, docs/math.md 5) multiclass hinge losses given the scores Z [B]."""
    if smoothing > 0:
        return _smoothed_loss(Z, Y, smoothing / l2)
    margins = 1.0 - Y + Z - (Z * Y).sum(-1, keepdim=True)
    return margins.amax(-1).sum(-1)


def _smoothed_loss(Z: Tensor, Y: Tensor, mu: Tensor) -> Tensor:
    """sum_i max_{b in simplex} <b, 1 - Y_i> + z_i.(b - Y_i) - (mu / 2) ||b - Y_i||^2  [B]
    with Z = X W [B, S, W]; mu = s / lambda2 [B, 1, 1] (docs/math.md, 5)."""
    a = 1.0 - Y + Z - (Z * Y).sum(-1, keepdim=True)  # <b, a_i> = <b, 1 - Y_i> + z_i.(b - Y_i)
    b = project_rows_to_simplex(Y + a / mu)
    return ((b * a).sum(-1) - 0.5 * mu[..., 0] * ((b - Y) ** 2).sum(-1)).sum(-1)


def primal_objective(
    X: Tensor, Y: Tensor, W: Tensor, lambda1: Scalar, lambda2: Scalar, smoothing: float = 0.0
) -> Tensor:
    """P(W) per task [B] (docs/math.md, 1); with ``smoothing = s > 0`` the smoothed primal
    whose dual carries the (s / (2 lambda2)) ||beta - Y||^2 term (docs/math.md, 5)."""
    B = X.shape[0]
    l1, l2 = task_param(lambda1, B, X), task_param(lambda2, B, X)
    loss = _loss(torch.bmm(X, W), Y, l2, smoothing)
    reg = l1[:, 0, 0] * torch.linalg.vector_norm(W, dim=-1).sum(-1) + 0.5 * l2[:, 0, 0] * (W * W).sum((1, 2))
    return loss + reg


def _dual_value(Y: Tensor, beta: Tensor, sq: Tensor, l2: Tensor, smoothing: float) -> Tensor:
    """S - f(beta) given sq = ||BST(X^T (Y - beta))||^2  [B]."""
    f = sq / (2.0 * l2[:, 0, 0]) + (Y * beta).sum((1, 2))
    if smoothing > 0:
        f = f + smoothing / (2.0 * l2[:, 0, 0]) * ((beta - Y) ** 2).sum((1, 2))
    return Y.shape[1] - f


def dual_objective(
    X: Tensor, Y: Tensor, beta: Tensor, lambda1: Scalar, lambda2: Scalar, smoothing: float = 0.0
) -> Tensor:
    """D(beta) = S - f(beta) per task [B], a lower bound on P* for feasible beta (docs/math.md, 3)."""
    B = X.shape[0]
    l1, l2 = task_param(lambda1, B, X), task_param(lambda2, B, X)
    U = _bst_of_beta(X, Y, beta, l1)
    return _dual_value(Y, beta, (U * U).sum((1, 2)), l2, smoothing)


def _gap(X, Y, beta, l1, l2, smoothing, K=None) -> Tuple[Tensor, Tensor, Tensor]:
    """(primal P(W(beta)), dual S - f(beta), relative gap) per task (docs/math.md, 4), from
    one evaluation of the scores: lambda2/2 ||W||^2 = ||U||^2 / (2 lambda2)."""
    Z, sq, l21 = _scores(X, Y, beta, l1, l2, K, norms=True)
    dual = _dual_value(Y, beta, sq, l2, smoothing)
    l1v, l2v = l1[:, 0, 0], l2[:, 0, 0]
    primal = _loss(Z, Y, l2, smoothing) + l1v * l21 / l2v + sq / (2.0 * l2v)
    rel = (primal - dual) / primal.abs().clamp_min(1.0)
    return primal, dual, rel


def _gram(X: Tensor) -> Tensor:
    """The smaller Gram matrix, X X^T [B, S, S] or X^T X [B, D, D]."""
    return torch.bmm(X, X.transpose(1, 2)) if X.shape[1] <= X.shape[2] else torch.bmm(X.transpose(1, 2), X)


def squared_spectral_norm(X: Tensor, gram: Optional[Tensor] = None) -> Tensor:
    """||X_b||_2^2 for each task [B]: the largest eigenvalue of the smaller Gram matrix
    (S x S or D x D), computed exactly by a batched symmetric eigensolver."""
    G = _gram(X) if gram is None else gram
    return torch.linalg.eigvalsh(G)[..., -1].clamp_min(0.0)


# ----------------------------------------------------------------------------------------
# one FISTA step (docs/math.md, 6)
# ----------------------------------------------------------------------------------------
def _dual_grad(X, Y, beta, l1, l2, smoothing, K=None) -> Tensor:
    """grad f(beta) = Y - X W(beta) [+ (s / lambda2)(beta - Y)]  [B, S, W]."""
    g = Y - _scores(X, Y, beta, l1, l2, K)[0]
    if smoothing > 0:
        g = g + (smoothing / l2) * (beta - Y)
    return g


def fista_step(X, Y, l1, l2, step, smoothing, x, y, t, K=None):
    """x+ = proj(y - step * grad f(y)); momentum with gradient restart (O'Donoghue & Candes
    2015): a task restarts (t = 1, y = x+) when <y - x+, x+ - x> > 0. Returns (x+, y+, t+)."""
    x_new = project_rows_to_simplex(y - step * _dual_grad(X, Y, y, l1, l2, smoothing, K))
    d = x_new - x
    restart = ((y - x_new) * d).sum((1, 2), keepdim=True) > 0
    t_new = 0.5 * (1.0 + torch.sqrt(1.0 + 4.0 * t * t))
    mom = torch.where(restart, torch.zeros_like(t), (t - 1.0) / t_new)
    t_new = torch.where(restart, torch.ones_like(t), t_new)
    return x_new, x_new + mom * d, t_new


def newton_step(X, Y, l1, l2, step, smoothing, x, K=None):
    """One projected-Newton step on the current face (docs/math.md, 6): a projected
    gradient step identifies the face (free entries F, active groups A), then the reduced
    KKT system H_FF d + E nu = -grad f_F, E^T d = 0 gives the step; the result is projected
    back onto the simplex rows. Exact in one step where f is quadratic on the face
    (lambda1 = 0, or active groups whose directions are fixed)."""
    base = project_rows_to_simplex(x - step * _dual_grad(X, Y, x, l1, l2, smoothing, K))
    g = _dual_grad(X, Y, base, l1, l2, smoothing, K)
    H = dual_hessian(X, Y, base, l1, l2, smoothing, gram=K)
    d = kkt_solve(H, -g, base > 0)
    return project_rows_to_simplex(base + d)


# ----------------------------------------------------------------------------------------
# the solver
# ----------------------------------------------------------------------------------------
@dataclass
class GroupLassoSVMDual:
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

    def lipschitz(self, X: Tensor, l2: Tensor, gram: Optional[Tensor] = None) -> Tensor:
        """L = (||X||_2^2 + s) / lambda2 per task [B, 1, 1] (docs/math.md, 6)."""
        return (squared_spectral_norm(X, gram).reshape(-1, 1, 1) + self.smoothing) / l2

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
        if bool((l2 <= 0).any()) or bool((l1 < 0).any()):
            raise ValueError("need lambda2 > 0 and lambda1 >= 0")
        X, Y = X.detach(), Y.detach()
        x = Y.clone() if beta0 is None else project_rows_to_simplex(beta0.detach().to(X))
        G = _gram(X)
        step = 1.0 / self.lipschitz(X, l2, G)
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
                p, d, g = _gap(Xa, Ya, x, l1a, l2a, self.smoothing, Ka)
                if self.polish and k < self.max_iter and k >= polish_at:
                    for _ in range(self.polish_steps):
                        want = (g > self.tol) & (g < self.polish_below)
                        if not bool(want.any()):
                            break
                        xn = newton_step(Xa, Ya, l1a, l2a, sa, self.smoothing, x, Ka)
                        pn, dn, gn = _gap(Xa, Ya, xn, l1a, l2a, self.smoothing, Ka)
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

    def unrolled(
        self, X: Tensor, Y: Tensor, lambda1: Scalar, lambda2: Scalar, iterations: Tensor,
        beta0: Optional[Tensor] = None,
    ) -> Tensor:
        """Replay ``iterations[b]`` FISTA steps per task with autograd recording them (for
        comparing against the implicit gradient only: memory grows with the iterations).
        The step size is treated as a constant."""
        check_inputs(X, Y)
        B = X.shape[0]
        l1, l2 = task_param(lambda1, B, X), task_param(lambda2, B, X)
        with torch.no_grad():
            step = 1.0 / self.lipschitz(X.detach(), l2.detach())
        x = Y.clone() if beta0 is None else project_rows_to_simplex(beta0.detach().to(X))
        y, t = x, torch.ones_like(step)
        n = iterations.reshape(B, 1, 1).to(X.device)
        for k in range(int(iterations.max()) if B else 0):
            xn, yn, tn = fista_step(X, Y, l1, l2, step, self.smoothing, x, y, t)
            run = k < n
            x, y, t = torch.where(run, xn, x), torch.where(run, yn, y), torch.where(run, tn, t)
        return x
