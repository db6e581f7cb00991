"""The reduced KKT solve on a face of the simplices (docs/math.md, 6-7), with the
generalized Hessian of dual_hessian.py: used by the face-Newton polish of both algorithms
and by the implicit gradient."""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from fewshot_sparse.solvers.compiled import compiled_call, maybe_compiled
from fewshot_sparse.solvers.dual_hessian import curvature, hessian_factors, static_width
from fewshot_sparse.solvers.group_lasso_dual import correlations, dual_gradient, gram, lipschitz_constant
from fewshot_sparse.solvers.ipm_systems import KroneckerSystem, cholesky_solve, class_block, lower_gram
from fewshot_sparse.solvers.prox import project_rows_to_simplex


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
        u = cholesky_solve(b, L)
    return _project_free(u, free).reshape(B, S, W)


def free_entries(X: Tensor, Y: Tensor, beta: Tensor, l1: Tensor, l2: Tensor, smoothing: float,
                 K: Optional[Tensor] = None) -> Tensor:
    """The free simplex entries F [B, S, W] (bool) of a (near-)optimal beta, identified as
    the support of one projected-gradient step proj(beta - grad f(beta) / L) (docs/math.md, 7).
    Equal to {beta > 0} at an exact solution, but robust to round-off entries (1e-17 left
    by a projection) and to not-yet-zero entries whose multiplier is clearly positive.
    K = X X^T may be given when lambda1 = 0 in every task (and S <= D)."""
    step = 1.0 / lipschitz_constant(X, l2, smoothing, K)
    z = beta - step * dual_gradient(X, Y, beta, l1, l2, smoothing, K)
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
        return project_rows_to_simplex(base + kkt_solve_kronecker(class_block(K, l2, smoothing), -g, free))
    return project_rows_to_simplex(base + kkt_solve_factored(X, Y, base, l1, l2, smoothing, -g, free))


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


def face_basis(free: Tensor) -> Tensor:
    """Q [B, S, W, W-1]: per row i, an orthonormal basis of {u in R^W : u = 0 off F_i,
    sum(u) = 0} in the first |F_i| - 1 columns, zero columns after (the eigenvectors of
    the row's projector of ``_project_free``, eigenvalue 1 kept, 0 dropped)."""
    f = free.to(torch.float64)
    P = torch.diag_embed(f) - f[..., :, None] * f[..., None, :] / f.sum(-1).clamp_min(1.0)[..., None, None]
    evals, evecs = torch.linalg.eigh(P)  # ascending: the W - |F_i| + 1 zeros first
    return evecs[..., 1:] * (evals[..., 1:] > 0.5).to(evecs.dtype)[..., None, :]


def kkt_solve_factored(X, Y, beta, l1, l2, smoothing, rhs: Tensor, free: Tensor, V: Optional[Tensor] = None) -> Tensor:
    """``kkt_solve`` with H at beta in factored form (``face_solve``), for lambda1 > 0; the
    tasks whose factorisation fails (a singular face beyond the ridge) take the dense form,
    which falls back to the pseudo-inverse. Returns u [B, S, W] in rhs's dtype. V = X^T
    (Y - beta) where the caller has it."""
    u, bad = face_solve(X, Y, beta, l1, l2, smoothing, rhs, free, V=V)
    return _dense_where_failed(u, bad, X, Y, beta, l1, l2, smoothing, rhs, free)


def _dense_where_failed(u, bad, X, Y, beta, l1, l2, smoothing, rhs, free) -> Tensor:
    if bool(bad.any()):
        H = hessian_factors(X, Y, beta.to(torch.float64), l1, l2, smoothing).dense(Y.shape[-1])
        u[bad] = kkt_solve(H[bad], rhs.to(torch.float64)[bad], free[bad])
    return u.to(rhs.dtype)


def face_solve(X, Y, beta, l1, l2, smoothing, rhs: Tensor, free: Tensor, gather: bool = True,
               width: Optional[int] = None, V: Optional[Tensor] = None,
               curvature_at_beta: Optional[tuple] = None) -> Tuple[Tensor, Tensor]:
    """The reduced KKT solve with H at beta in factored form (dual_hessian.py): u = Q y
    with Q the rows' face bases (``face_basis``) eliminates both u = 0 off F and E^T u = 0
    exactly, leaving one S (W-1) Cholesky of

        Q^T H Q = [Ka_ij Q_i^T Q_j] + (Z Q)(Z Q)^T + shift Q^T Q    (+ I on the unused columns)

    instead of the projected S W one. Returns (u [B, S, W] in float64, the tasks [B] whose
    factorisation failed). ``gather``, ``width``, ``V``, ``curvature_at_beta``: as
    ``hessian_factors`` (gather=False with a width: no host sync)."""
    B, S, W = Y.shape
    k = W - 1
    f = hessian_factors(X, Y, beta.to(torch.float64), l1, l2, smoothing, V=V, gather=gather, width=width,
                        curvature_at_beta=curvature_at_beta)
    Q = face_basis(free)  # [B, S, W, k]
    used = (Q.abs().sum(2) > 0).to(torch.float64)  # [B, S, k]
    # Ka_ij Q_i^T Q_j from one product and a broadcast multiply (an einsum over the 5-D
    # index ran 10x slower: its inner loops have length W - 1)
    Qr = Q.transpose(2, 3).reshape(B, S * k, W)
    R = torch.bmm(Qr, Qr.mT).view(B, S, k, S, k).mul_(f.Ka[:, :, None, :, None]).view(B, S * k, S * k)
    if f.Xg is not None:
        GQ = torch.einsum("bica,bmc->biam", Q, f.G.to(torch.float64))  # [B, S, k, m]
        Zr = (f.Xg.to(torch.float64)[:, :, None, :] * GQ).reshape(B, S * k, -1)
        lower_gram(Zr, torch.float64, out=R)  # the lower triangle: all the Cholesky reads
    scale = f.diagonal(W).amax((1, 2))[:, None, None]
    # kkt_solve's Tikhonov ridge; H = 0 (every group off, s = 0) gets a unit one: then u is
    # the projected right-hand side, not an overflow
    zero, one = scale <= torch.finfo(torch.float64).tiny, torch.ones_like(scale)
    ridge = torch.where(zero, one, 100.0 * torch.finfo(torch.float64).eps * scale)
    scale = torch.where(zero, one, scale)
    R.diagonal(dim1=1, dim2=2).add_((used * (f.shift + ridge) + (1.0 - used) * scale).reshape(B, S * k))
    L, info = torch.linalg.cholesky_ex(R)
    y = cholesky_solve(torch.einsum("bica,bic->bia", Q, rhs.to(torch.float64)).reshape(B, S * k, 1), L)
    u = torch.einsum("bica,bia->bic", Q, y.reshape(B, S, k))
    return u, info > 0


def kronecker_adjoint(X, Y, beta, l1, l2, smoothing: float, rhs: Tensor) -> Tensor:
    """``adjoint_solve`` where lambda1 = 0 in every task (and S <= D): one Gram matrix K =
    X X^T in float64 serves the face identification and the class-block solve."""
    K = gram(X.to(torch.float64))
    free = free_entries(X, Y, beta.to(torch.float64), l1, l2, smoothing, K)
    return kkt_solve_kronecker(class_block(K, l2, smoothing), rhs, free)


def face_and_curvature(X, Y, beta, l1, l2, smoothing: float, V: Tensor):
    """(free entries [B, S, W], the curvature at beta, the largest count of rank-one groups
    in a task []) for the compiled adjoint solve, V = X^T (Y - beta): one compiled call and
    one host read of the count."""
    at_beta = curvature(V, l1)
    return free_entries(X, Y, beta, l1, l2, smoothing), at_beta, at_beta[3].sum(-1).amax()


def adjoint_solve(X: Tensor, Y: Tensor, beta: Tensor, l1: Tensor, l2: Tensor, smoothing: float, rhs: Tensor,
                  compiled: bool = False, V: Optional[Tensor] = None) -> Tensor:
    """The implicit gradient's adjoint system at a solution beta (docs/math.md, 7):
    H_FF u + E w = rhs_F, E^T u = 0, u = 0 off the free entries F. Class blocks when
    lambda1 = 0 in every task (and S <= D; one Gram matrix serves F and the solve), the
    factored face solve otherwise. ``compiled``: the face identification and the factored
    solve run through torch.compile (compiled.py), the rank-one groups gathered to a
    static width read in one host sync (the same solution to round-off). V = X^T (Y -
    beta) where the caller has it."""
    if X.shape[1] <= X.shape[2] and not bool((l1 > 0).any()):
        return maybe_compiled(compiled, kronecker_adjoint, X, Y, beta, l1, l2, smoothing, rhs)
    if not compiled:
        free = free_entries(X, Y, beta, l1, l2, smoothing)
        return kkt_solve_factored(X, Y, beta, l1, l2, smoothing, rhs, free, V)
    V = correlations(X, Y - beta.to(torch.float64)) if V is None else V
    free, at_beta, widest = compiled_call(face_and_curvature, X, Y, beta, l1, l2, smoothing, V)
    width = static_width(int(widest), X.shape[-1])
    u, bad = compiled_call(face_solve, X, Y, beta, l1, l2, smoothing, rhs, free, gather=False, width=width, V=V,
                           curvature_at_beta=at_beta)
    return _dense_where_failed(u, bad, X, Y, beta, l1, l2, smoothing, rhs, free)
