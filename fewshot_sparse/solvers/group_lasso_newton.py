"""The dual's second-order structure (docs/math.md, 6-7): the generalized Hessian, built on
the active feature groups only, and the reduced KKT solve on a face of the simplices.
Used by the interior-point solver (Newton systems), the face-Newton polish of both
algorithms and the implicit gradient."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from fewshot_sparse.solvers.group_lasso_dual import correlations, dual_gradient, gram, lipschitz_constant
from fewshot_sparse.solvers.ipm_systems import KroneckerSystem
from fewshot_sparse.solvers.prox import project_rows_to_simplex


def dual_hessian(
    X: Tensor, Y: Tensor, beta: Tensor, l1: Tensor, l2: Tensor, smoothing: float,
    gram: Optional[Tensor] = None, V: Optional[Tensor] = None,
) -> Tensor:
    """Hessian of the dual objective f at beta, [B, S W, S W] (index i * W + c), built on the
    active groups only (docs/math.md, 7):

        H = (1 / lambda2) [ sum_{j in A} (x_j x_j^T) kron M_j ] + (s / lambda2) I,
        M_j = a_j I + b_j v^_j v^_j^T,  a_j = 1 - lambda1 / ||v_j||,  b_j = lambda1 / ||v_j||.

    The a-part is (X diag(a) X^T) kron I (one S x S Gram matrix); the rank-one b-parts are
    gathered on the active features only (padded to the largest active count in the batch).
    ``gram`` = X X^T may be passed when lambda1 = 0 in every task (then a = 1, b = 0);
    ``V`` = X^T (Y - beta) when the caller has it already. The matrix is assembled in X's
    dtype (the D-long contractions) and returned in beta's dtype.
    """
    B, S, D = X.shape
    W = Y.shape[-1]
    out = beta.dtype
    l2 = l2.to(out)
    if gram is not None:
        return _assemble(gram.to(out) / l2, None, l2, smoothing, W)
    V = correlations(X, Y - beta) if V is None else V  # [B, D, W]
    n = torch.linalg.vector_norm(V, dim=-1)  # [B, D]
    lam = l1[:, :, 0].to(X.dtype)  # [B, 1]
    active = (n > lam) | (lam <= 0)
    n_safe = torch.where(n > 0, n, torch.ones_like(n))
    b = torch.where(active, lam / n_safe, torch.zeros_like(n))
    a = torch.where(active, 1.0 - b, torch.zeros_like(n))
    Ka = torch.bmm(X * a[:, None, :], X.transpose(1, 2)).to(out) / l2  # [B, S, S]
    rank_one = active & (b > 0)
    m = int(rank_one.sum(-1).max()) if rank_one.numel() else 0  # the padding size: one sync
    ZZt = None
    if m > 0:
        order = torch.argsort(rank_one.to(torch.int8), dim=-1, descending=True, stable=True)[:, :m]
        sb = torch.sqrt(torch.gather(b, 1, order))  # zero on padding
        Vh = torch.gather(V, 1, order[..., None].expand(B, m, W)) / torch.gather(n_safe, 1, order)[..., None]
        Xg = torch.gather(X, 2, order[:, None, :].expand(B, S, m))  # [B, S, m]
        # Z[b, i, c, j] = X_ij sqrt(b_j) vhat_jc, so Z Z^T = sum_j b_j (x_j x_j^T) kron (vhat_j vhat_j^T)
        Z = (Xg[:, :, None, :] * (sb[:, :, None] * Vh).transpose(1, 2)[:, None, :, :]).reshape(B, S * W, m)
        ZZt = torch.bmm(Z, Z.transpose(1, 2)).to(out) / l2
    return _assemble(Ka, ZZt, l2, smoothing, W)


def _assemble(Ka: Tensor, rank_part: Optional[Tensor], l2: Tensor, smoothing: float, W: int) -> Tensor:
    """H = Ka kron I_W + rank_part + (s / lambda2) I, written in place: Ka [B, S, S] goes on
    the class diagonal of each (i, k) block (H[i, c, k, c] = Ka[i, k])."""
    B, S, _ = Ka.shape
    n = S * W
    H = torch.zeros(B, n, n, dtype=Ka.dtype, device=Ka.device) if rank_part is None else rank_part
    H.view(B, S, W, S, W).diagonal(dim1=2, dim2=4).add_(Ka[..., None])
    if smoothing > 0:
        H.diagonal(dim1=1, dim2=2).add_((smoothing / l2)[:, :, 0])
    return H


def _project_free(M: Tensor, free: Tensor) -> Tensor:
    """P M for P = blockdiag_i (diag(f_i) - f_i f_i^T / |F_i|), the orthogonal projector on
    {u : u_ic = 0 off F, sum_c u_ic = 0}; M [B, S W, k], free [B, S, W] float."""
    B, S, W = free.shape
    Mr = M.reshape(B, S, W, -1)
    f = free[..., None]
    mean = (f * Mr).sum(2, keepdim=True) / f.sum(2, keepdim=True).clamp_min(1.0)
    return (f * (Mr - mean)).reshape(B, S * W, -1)


def kkt_solve(H: Tensor, rhs: Tensor, free: Tensor, ridge: Optional[float] = None) -> Tensor:
    """Solve the reduced KKT system for u [B, S, W] (docs/math.md, 7):

        (P H P + (I - P) + eps P) u = P rhs,

    i.e. H u + E nu = rhs on the free entries, E^T u = 0, u = 0 off F. The tiny ridge
    eps = ridge * max diag(P H P) (default 100 * machine epsilon) only matters where
    P H P is singular (a non-unique dual, e.g. duplicated support points): there the adjoint
    system is consistent and the ridge picks the minimum-norm solution, the Tikhonov limit of the
    pseudo-inverse. All features off gives H = 0 and a zero right-hand side, so u = 0."""
    B, S, W = free.shape
    n = S * W
    free = free.to(H.dtype)
    eye = torch.eye(n, dtype=H.dtype, device=H.device).expand(B, n, n)
    P = _project_free(eye, free)  # P is symmetric
    PHP = _project_free(_project_free(H, free).transpose(1, 2), free)
    PHP = 0.5 * (PHP + PHP.transpose(1, 2))
    if ridge is None:
        ridge = 100.0 * torch.finfo(H.dtype).eps
    scale = torch.diagonal(PHP, dim1=1, dim2=2).amax(-1).clamp_min(torch.finfo(H.dtype).tiny)
    A = PHP + (eye - P) + (ridge * scale)[:, None, None] * P
    b = _project_free(rhs.reshape(B, n, 1), free)
    L, info = torch.linalg.cholesky_ex(A)
    if bool((info > 0).any()):  # numerically indefinite: fall back to the pseudo-inverse
        u = torch.linalg.pinv(A, hermitian=True) @ b
    else:
        u = torch.cholesky_solve(b, L)
    return _project_free(u, free).reshape(B, S, W)


def free_entries(X: Tensor, Y: Tensor, beta: Tensor, l1: Tensor, l2: Tensor, smoothing: float) -> Tensor:
    """The free simplex entries F [B, S, W] (bool) of a (near-)optimal beta, identified as
    the support of one projected-gradient step proj(beta - grad f(beta) / L) (docs/math.md, 7).
    Equal to {beta > 0} at an exact solution, but robust to round-off entries (1e-17 left
    by a projection) and to not-yet-zero entries whose multiplier is clearly positive."""
    step = 1.0 / lipschitz_constant(X, l2, smoothing)
    z = beta - step * dual_gradient(X, Y, beta, l1, l2, smoothing)
    return project_rows_to_simplex(z) > 0


def face_newton_step(X, Y, beta, free, l1, l2, smoothing, K=None) -> Tensor:
    """One Newton step on the face ``free`` [B, S, W] (bool) of the simplices (docs/math.md,
    6): beta restricted to the face (rows renormalised) moves by the reduced KKT solution
    H_FF d + E nu = -grad f_F, E^T d = 0, and is projected back onto the simplex rows.
    Exact in one step where f is quadratic on the face (lambda1 = 0, or active groups whose
    directions stay fixed); quadratically convergent otherwise."""
    base = beta * free
    base = base / base.sum(-1, keepdim=True).clamp_min(torch.finfo(beta.dtype).tiny)
    g = dual_gradient(X, Y, base, l1, l2, smoothing, K)
    if K is not None:
        A = K / l2 + (smoothing / l2) * torch.eye(K.shape[-1], dtype=K.dtype, device=K.device)
        return project_rows_to_simplex(base + kkt_solve_kronecker(A, -g, free))
    return project_rows_to_simplex(base + kkt_solve(dual_hessian(X, Y, base, l1, l2, smoothing), -g, free))


def kkt_solve_kronecker(A: Tensor, rhs: Tensor, free: Tensor) -> Tensor:
    """``kkt_solve`` for lambda1 = 0, where H = A kron I_W with A = K / lambda2 (+ s /
    lambda2 I) [B, S, S]: the entries off the face get a diagonal weight 1e12 times H's
    scale, which pins them to zero (relative error 1e-12), and the free entries the same
    tiny Tikhonov ridge as kkt_solve; then the class-block solve of ipm_systems.py costs
    W S^3 instead of (S W)^3. Runs in float64; returns u [B, S, W] in rhs's dtype."""
    A64, free = A.to(torch.float64), free.to(torch.bool)
    scale = torch.diagonal(A64, dim1=1, dim2=2).amax(-1).clamp_min(torch.finfo(torch.float64).tiny)[:, None, None]
    d = torch.where(free, 100.0 * torch.finfo(torch.float64).eps * scale, 1e12 * scale)
    u, _ = KroneckerSystem(A64, d, torch.zeros_like(scale)).solve(rhs.to(torch.float64))
    return (u * free).to(rhs.dtype)


def adjoint_solve(X: Tensor, Y: Tensor, beta: Tensor, l1: Tensor, l2: Tensor, smoothing: float, rhs: Tensor) -> Tensor:
    """The implicit gradient's adjoint system at a solution beta (docs/math.md, 7):
    H_FF u + E w = rhs_F, E^T u = 0, u = 0 off the free entries F. Class blocks when
    lambda1 = 0 in every task (and S <= D), the dense projected form otherwise."""
    free = free_entries(X, Y, beta, l1, l2, smoothing)
    B, S, W = Y.shape
    if X.shape[1] <= X.shape[2] and not bool((l1 > 0).any()):
        A = gram(X.to(torch.float64)) / l2.to(torch.float64)
        A = A + (smoothing / l2.to(torch.float64)) * torch.eye(S, dtype=torch.float64, device=X.device)
        return kkt_solve_kronecker(A, rhs, free)
    return kkt_solve(dual_hessian(X, Y, beta, l1, l2, smoothing), rhs, free)
