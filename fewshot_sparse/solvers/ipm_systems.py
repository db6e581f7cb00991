"""The interior-point Newton systems of the dual, factorised once per iteration
(docs/math.md, 6):

    (H + diag(d)) d_beta + E^T d_nu = r,     E d_beta = 0,

where E sums each row of beta [S, W] over its W classes and d = z / beta > 0. Both forms
eliminate d_beta and solve the S x S Schur complement E M^-1 E^T for d_nu.

``KroneckerSystem``: lambda1 = 0, where H = (K kron I_W) / lambda2 [+ s / lambda2 I]
couples support points only within one class. In class-major order M is block diagonal
with W blocks K / lambda2 + diag(d_c) of size S, so a Newton step costs W S^3 instead
of (S W)^3: 25x less at 5 ways.

``DenseSystem``: lambda1 > 0, where the rank-one parts of the generalized Hessian couple
the classes; one dense (S W) x (S W) Cholesky.

A factorisation that fails (not numerically positive definite) is reported per task in
``ok``; the caller then leaves that task in place and retries with a larger ridge.
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor


def _add_to_diagonal(M: Tensor, d: Tensor, ridge: Tensor) -> Tensor:
    """M += diag(d), then += ridge * max diag(M) * I, in place on a fresh M [..., n, n];
    d [..., n], ridge broadcastable to [..., 1]."""
    diag = M.diagonal(dim1=-2, dim2=-1)
    diag.add_(d)
    diag.add_(ridge * diag.amax(-1, keepdim=True))
    return M


class KroneckerSystem:
    """A [B, S, S] (K / lambda2 + s / lambda2 I), d [B, S, W], ridge [B, 1, 1]. Per class c,
    M_c = L_c L_c^T and C_c = L_c^-1; the Schur complement is sum_c C_c^T C_c."""

    def __init__(self, A: Tensor, d: Tensor, ridge: Tensor):
        B, S, W = d.shape
        self.shape = (B, S, W)
        Mc = A[:, None].expand(B, W, S, S).clone()  # [B, W, S, S]
        Lc, info = torch.linalg.cholesky_ex(_add_to_diagonal(Mc, d.transpose(1, 2), ridge))
        eye = torch.eye(S, dtype=A.dtype, device=A.device).expand(B, W, S, S)
        self.Lc = Lc
        self.C = torch.linalg.solve_triangular(Lc, eye, upper=False)  # [B, W, S, S]
        Ls, info_s = torch.linalg.cholesky_ex((self.C.transpose(-1, -2) @ self.C).sum(1))  # E M^-1 E^T
        self.Ls = Ls
        self.ok = ((info == 0).all(1) & (info_s == 0)).reshape(B, 1, 1)

    def solve(self, r: Tensor) -> Tuple[Tensor, Tensor]:
        """r [B, S, W] -> (d_beta [B, S, W], d_nu [B, S, 1])."""
        y = self.C @ r.transpose(1, 2)[..., None]  # L_c^-1 r_c  [B, W, S, 1]
        d_nu = torch.cholesky_solve((self.C.transpose(-1, -2) @ y).sum(1), self.Ls)  # [B, S, 1]
        d_beta = self.C.transpose(-1, -2) @ (y - self.C @ d_nu[:, None])
        return d_beta[..., 0].transpose(1, 2), d_nu


class DenseSystem:
    """H [B, S W, S W] (index i * W + c; overwritten), d [B, S, W], ridge [B, 1, 1]. With
    M = L L^T and C = L^-1 E^T, the Schur complement is C^T C and a solve needs two
    triangular solves with one right-hand side."""

    def __init__(self, H: Tensor, d: Tensor, ridge: Tensor):
        B, S, W = d.shape
        n = S * W
        self.shape = (B, S, W)
        L, info = torch.linalg.cholesky_ex(_add_to_diagonal(H, d.reshape(B, n), ridge[:, :, 0]))
        E_t = torch.eye(S, dtype=H.dtype, device=H.device).repeat_interleave(W, 0).expand(B, n, S)
        self.L = L
        self.C = torch.linalg.solve_triangular(L, E_t, upper=False)  # [B, n, S]
        Ls, info_s = torch.linalg.cholesky_ex(self.C.transpose(1, 2) @ self.C)
        self.Ls = Ls
        self.ok = ((info == 0) & (info_s == 0)).reshape(B, 1, 1)

    def solve(self, r: Tensor) -> Tuple[Tensor, Tensor]:
        B, S, W = self.shape
        y = torch.linalg.solve_triangular(self.L, r.reshape(B, S * W, 1), upper=False)
        d_nu = torch.cholesky_solve(self.C.transpose(1, 2) @ y, self.Ls)
        d_beta = torch.linalg.solve_triangular(self.L.transpose(1, 2), y - self.C @ d_nu, upper=True)
        return d_beta.reshape(B, S, W), d_nu
