"""The interior-point Newton systems of the dual, factorised once per iteration
(docs/math.md, 6):

    (H + diag(d)) d_beta + E^T d_nu = r,     E d_beta = 0,

where E sums each row of beta [S, W] over its W classes and d = z / beta > 0.

``KroneckerSystem``: lambda1 = 0, where H = (K kron I_W) / lambda2 [+ s / lambda2 I]
couples support points only within one class. In class-major order M is block diagonal
with W blocks K / lambda2 + diag(d_c) of size S, so a Newton step costs W S^3 instead
of (S W)^3: 25x less at 5 ways; d_beta is eliminated and the S x S Schur complement
E M^-1 E^T gives d_nu.

``NullSpaceSystem``: lambda1 > 0, where the rank-one parts of the generalized Hessian
couple the classes; E d_beta = 0 is eliminated by a basis of its null space, leaving one
dense S (W-1) x S (W-1) Cholesky.

A factorisation that fails (not numerically positive definite) is reported per task in
``ok``; the caller then leaves that task in place and retries with a larger ridge. Solves
are two triangular solves that read the factor in place (``torch.cholesky_solve`` copies
it first: 70 against 42 us for one right-hand side at S (W-1) = 300).
"""

from __future__ import annotations

import functools
import math
from typing import Optional, Tuple

import torch
from torch import Tensor


def _add_ridge(M: Tensor, ridge: Tensor, scale: Tensor) -> Tensor:
    """M += ridge * scale * I in place on a fresh M [..., n, n]; ridge and scale
    broadcastable to [..., 1]. ``scale`` is the largest diagonal entry of the Hessian part,
    not of M: the barrier's z / beta reaches 1e11 on the bound entries, and a ridge
    relative to that is a proximal term far above the curvature of the free face, which
    cuts each step along a direction of curvature h there to h / (h + ridge) of its
    length (docs/math.md 6, "Ridge").
    Where the Hessian part is zero, M's own largest diagonal entry."""
    diag = M.diagonal(dim1=-2, dim2=-1)
    scale = torch.where(scale > 0, scale, diag.amax(-1, keepdim=True))
    diag.add_(ridge * scale)
    return M


def cholesky_solve(b: Tensor, L: Tensor) -> Tensor:
    """(L L^T)^-1 b for a lower Cholesky factor L, by two triangular solves."""
    y = torch.linalg.solve_triangular(L, b, upper=False)
    return torch.linalg.solve_triangular(L.mT, y, upper=True)


def sum_of_inverses(L: Tensor, capturable: bool = False) -> Tensor:
    """sum_c (L_c L_c^T)^-1 [B, S, S] for lower Cholesky factors L [B, W, S, S].
    ``capturable``: from one triangular solve and one product, sum_c L_c^-T L_c^-1 =
    Linv^T Linv with Linv the W inverses stacked [B, W S, S] (cuBLAS only, which a CUDA
    graph can capture; torch.cholesky_inverse of a 4-D CUDA batch goes to MAGMA, which
    builds host-side arrays). Else LAPACK's potri, 15-20% faster on the CPU."""
    if not capturable:
        return torch.cholesky_inverse(L).sum(1)
    B, W, S, _ = L.shape
    eye = torch.eye(S, dtype=L.dtype, device=L.device).expand(B, W, S, S)
    Linv = torch.linalg.solve_triangular(L, eye, upper=False).reshape(B, W * S, S)
    return Linv.mT @ Linv


def class_block(K: Tensor, l2: Tensor, smoothing: float) -> Tensor:
    """A = K / lambda2 + (s / lambda2) I [B, S, S] in K's dtype: H's block per class when
    lambda1 = 0 (H = A kron I_W), the A of ``KroneckerSystem``; l2 [B, 1, 1]."""
    l2 = l2.to(K.dtype)
    return K / l2 + (smoothing / l2) * torch.eye(K.shape[-1], dtype=K.dtype, device=K.device)


class KroneckerSystem:
    """A [B, S, S] (K / lambda2 + s / lambda2 I), d [B, S, W], ridge [B, 1, 1]. Per class c,
    M_c = L_c L_c^T; the Schur complement is sum_c M_c^-1."""

    def __init__(self, A: Tensor, d: Tensor, ridge: Tensor):
        B, S, W = d.shape
        Mc = A[:, None].expand(B, W, S, S).clone()  # [B, W, S, S]
        scale = A.diagonal(dim1=1, dim2=2).amax(-1)[:, None, None]  # [B, 1, 1]
        Mc.diagonal(dim1=-2, dim2=-1).add_(d.transpose(1, 2))
        Lc, info = torch.linalg.cholesky_ex(_add_ridge(Mc, ridge, scale))
        Ls, info_s = torch.linalg.cholesky_ex(sum_of_inverses(Lc, capturable=Lc.is_cuda))  # E M^-1 E^T
        self.Lc, self.Ls = Lc, Ls
        self.ok = ((info == 0).all(1) & (info_s == 0)).reshape(B, 1, 1)

    def solve(self, r: Tensor, need_nu: bool = True) -> Tuple[Tensor, Optional[Tensor]]:
        """r [B, S, W] -> (d_beta [B, S, W], d_nu [B, S, 1]) (d_nu comes first here, so
        ``need_nu`` changes nothing)."""
        rc = r.transpose(1, 2)[..., None]  # [B, W, S, 1]
        d_nu = cholesky_solve(cholesky_solve(rc, self.Lc).sum(1), self.Ls)  # [B, S, 1]
        d_beta = cholesky_solve(rc - d_nu[:, None], self.Lc)
        return d_beta[..., 0].transpose(1, 2), d_nu


class NullSpaceSystem:
    """lambda1 > 0, H from its factors (dual_hessian.py), d [B, S, W], ridge [B, 1, 1];
    ``basis`` = sum_zero_basis(W) in d's dtype and device, where the caller has it (a CUDA
    graph may not copy it from the host).

    E d_beta = 0 says that each row of d_beta sums to zero: d_beta = y N^T with N [W, W-1]
    an orthonormal basis of the sum-zero vectors, and the projected system

        R y = N^T r,    R = N^T (H + diag(d)) N = Ka kron I_(W-1) + Zr Zr^T + blocks_i(N^T diag(d_i) N)

    has S (W-1) unknowns (Zr = Z N: G becomes G N). One Cholesky of that size replaces the
    (S W)-sized one plus the S x S Schur complement: about 3x fewer flops at 5 ways. Then
    E^T d_nu = r - M d_beta, whose rows are constant: d_nu is their mean. R is formed in
    its lower triangle only (``lower_gram``), all that the Cholesky reads."""

    def __init__(self, factors, d: Tensor, ridge: Tensor, basis: Optional[Tensor] = None):
        B, S, W = d.shape
        k = W - 1
        self.N = sum_zero_basis(W, d.dtype, d.device) if basis is None else basis  # [W, W-1]
        self.factors, self.d = factors, d
        if factors.Xg is None:
            R = torch.zeros(B, S * k, S * k, dtype=d.dtype, device=d.device)
        else:
            Xg, GN = factors.Xg, factors.G @ self.N.to(factors.G.dtype)  # [B, m, k]
            Zr = (Xg[:, :, None, :] * GN.transpose(1, 2)[:, None, :, :]).reshape(B, S * k, Xg.shape[-1])
            R = lower_gram(Zr, d.dtype)
        R5 = R.view(B, S, k, S, k)
        R5.diagonal(dim1=2, dim2=4).add_(factors.Ka[..., None])  # Ka kron I
        diag = R.diagonal(dim1=1, dim2=2)
        diag.add_(factors.shift[:, :, 0])
        scale = diag.amax(-1, keepdim=True)  # the Hessian part's (before the barrier's d)
        # N^T diag(d_i) N per row i, [B, k, k, S] as the diagonal over rows reads it: sum_w
        # d_iw N_w N_w^T, one product with the W outer products (an einsum: 20 small ops)
        outer = (self.N[:, :, None] * self.N[:, None, :]).reshape(W, k * k)
        R5.diagonal(dim1=1, dim2=3).add_((d @ outer).view(B, S, k, k).permute(0, 2, 3, 1))
        L, info = torch.linalg.cholesky_ex(_add_ridge(R, ridge[:, :, 0], scale))
        self.L, self.ok = L, (info == 0).reshape(B, 1, 1)

    def solve(self, r: Tensor, need_nu: bool = True) -> Tuple[Tensor, Optional[Tensor]]:
        """r [B, S, W] -> (d_beta [B, S, W], d_nu [B, S, 1] or None): d_nu costs one
        Hessian-vector product more, which the predictor does not need."""
        B, S, W = self.d.shape
        y = cholesky_solve((r @ self.N).reshape(B, S * (W - 1), 1), self.L)
        d_beta = y.reshape(B, S, W - 1) @ self.N.T
        if not need_nu:
            return d_beta, None
        d_nu = (r - self.factors.matvec(d_beta) - self.d * d_beta).mean(-1, keepdim=True)
        return d_beta, d_nu


_GRAM_ROW_BLOCKS = 3  # 2/3 of the product's flops; more blocks are smaller products (measured)


def lower_gram(Z: Tensor, dtype: torch.dtype, out: Optional[Tensor] = None) -> Tensor:
    """Z Z^T [B, n, n] in ``dtype`` for Z [B, n, m] (added to ``out`` where given), its
    lower triangle and diagonal exact, above it partly zeros, partly the product (whole row
    blocks, each row block r0:r1 times the rows :r1): a matrix only for a Cholesky
    factorisation, which reads the lower triangle alone (LAPACK's and cuSOLVER's potrf with
    uplo = L)."""
    B, n, _ = Z.shape
    R = torch.zeros(B, n, n, dtype=dtype, device=Z.device) if out is None else out
    edges = [round(n * j / _GRAM_ROW_BLOCKS) for j in range(_GRAM_ROW_BLOCKS + 1)]
    for r0, r1 in zip(edges[:-1], edges[1:]):
        block = torch.bmm(Z[:, r0:r1], Z[:, :r1].transpose(1, 2))
        if out is None:  # written, not added: one kernel less
            R[:, r0:r1, :r1] = block
        else:
            R[:, r0:r1, :r1] += block
    return R


@functools.lru_cache(maxsize=None)
def _helmert(W: int) -> Tensor:
    N = torch.zeros(W, W - 1, dtype=torch.float64, device="cpu")  # on the host whatever the default device
    for k in range(1, W):  # column k: (1, ..., 1, -k, 0, ...) / sqrt(k (k + 1)), k ones
        N[:k, k - 1] = 1.0
        N[k, k - 1] = -float(k)
        N[:, k - 1] /= math.sqrt(k * (k + 1))
    return N


def sum_zero_basis(W: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """An orthonormal basis [W, W - 1] of {u in R^W : sum(u) = 0} (Helmert's columns)."""
    return _helmert(W).to(dtype=dtype, device=device)
