"""The dual's generalized Hessian (docs/math.md, 7), kept in factored form.

    H = Ka kron I_W + Z Z^T + shift I,      Ka = X diag(a) X^T / lambda2,
    Z[(i, c), j] = Xg[i, j] G[j, c],        G[j] = sqrt(b_j / lambda2) vhat_j,

over the active groups j (a_j = 1 - lambda1 / ||v_j||, b_j = lambda1 / ||v_j||; a = 1,
b = 0 for lambda1 = 0) and shift = s / lambda2. The factors cost one S x S Gram matrix
and a gather of the m groups with b_j > 0; the Newton systems (ipm_systems.py) build their
matrices from them, the face KKT solves (group_lasso_newton.py) from ``dense``, and
``matvec`` is a Hessian-vector product with two skinny products."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import Tensor

from fewshot_sparse.solvers.group_lasso_dual import correlations
from fewshot_sparse.solvers.prox import row_norms

_FOLD = 1e-4  # group pairs: rank-one curvature up to this joins a instead (a majorant, math.md 6)
_FOLD_RELATIVE = 1000.0  # ... and up to this times a (math.md 6, "Curvature gathered")


@dataclass
class HessianFactors:
    """Ka [B, S, S] and shift [B, 1, 1] in the work dtype; Xg [B, S, m] and G [B, m, W] in
    the features' dtype (None when no group has b_j > 0, e.g. lambda1 = 0)."""

    Ka: Tensor
    Xg: Optional[Tensor]
    G: Optional[Tensor]
    shift: Tensor

    def matvec(self, u: Tensor) -> Tensor:
        """H u for u [B, S, W] (work dtype)."""
        out = torch.bmm(self.Ka, u) + self.shift * u
        if self.Xg is not None:
            t = (torch.bmm(self.Xg.transpose(1, 2), u.to(self.Xg.dtype)) * self.G).sum(-1, keepdim=True)
            out = out + torch.bmm(self.Xg, t * self.G).to(u.dtype)
        return out

    def diagonal(self, W: int) -> Tensor:
        """The diagonal of H [B, S, W] (work dtype)."""
        diag = self.Ka.diagonal(dim1=1, dim2=2)[..., None] + self.shift
        if self.Xg is not None:
            diag = diag + torch.bmm(self.Xg * self.Xg, self.G * self.G).to(diag.dtype)
        return diag.expand(-1, -1, W)

    def dense(self, W: int) -> Tensor:
        """H as a matrix [B, S W, S W] (index i * W + c), written in place."""
        B, S, _ = self.Ka.shape
        if self.Xg is None:
            H = torch.zeros(B, S * W, S * W, dtype=self.Ka.dtype, device=self.Ka.device)
        else:
            m = self.Xg.shape[-1]
            Z = (self.Xg[:, :, None, :] * self.G.transpose(1, 2)[:, None, :, :]).reshape(B, S * W, m)
            H = torch.bmm(Z, Z.transpose(1, 2)).to(self.Ka.dtype)
        H.view(B, S, W, S, W).diagonal(dim1=2, dim2=4).add_(self.Ka[..., None])
        H.diagonal(dim1=1, dim2=2).add_(self.shift[:, :, 0])
        return H


def curvature(V: Tensor, l1: Tensor, pairs: Optional[Tuple[Tensor, Tensor]] = None,
              norms: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per group (V [B, D, W], l1 [B, 1, 1]): ||v_j|| (1 where 0), a_j, b_j and the mask of
    the groups with rank-one curvature (b_j > 0), in V's dtype. ``pairs`` (p, q) [B, D]:
    the Newton model of the interior-point solver's group pairs (ipm_groups.py) instead of
    f's generalized Hessian; ``norms``: row_norms(V) where the caller has them."""
    n = row_norms(V) if norms is None else norms  # [B, D]
    n_safe = torch.where(n > 0, n, 1.0)
    if pairs is None:
        lam = l1[:, :, 0].to(V.dtype)  # [B, 1]
        active = (n > lam) | (lam <= 0)
        b = torch.where(active, lam / n_safe, 0.0)
        a = torch.where(active, 1.0 - b, 0.0)
    else:  # radial p / (p + q), tangential p / ||v_j||
        p, q = pairs
        a = (p / n_safe.to(p.dtype)).to(V.dtype)
        # a I + b vv^T with b = radial - a; b < 0 (below the threshold, where the slack
        # exceeds half of lambda1) is raised to 0, and b <= min(_FOLD, _FOLD_RELATIVE a)
        # becomes (a + b) I: both majorants, which keep those groups out of the rank-one
        # gather. The relative bound: a group just below its threshold can have b ~ 1e4 a
        # (radial curvature, hardly any tangential), and (a + b) I there swamps the small
        # curvature of a non-unique dual's face: linear convergence (math.md 6)
        b = (p / (p + q)).to(V.dtype) - a
        fold = (b > 0) & (b <= _FOLD) & (b <= _FOLD_RELATIVE * a)
        plain = l1[:, :, 0] <= 0  # lambda1 = 0 beside lambda1 > 0 tasks: f's own Hessian
        a = torch.where(plain, 1.0, torch.where(fold, a + b, a))
        b = torch.where(fold | plain, 0.0, b.clamp_min(0.0))
        active = a > 0
    return n_safe, a, b, active & (b > 0)


MIN_WIDTH = 64  # the narrowest static gather of rank-one groups


def static_width(count: int, D: int) -> Optional[int]:
    """A static width for ``count`` gathered groups: the next power of two, at least
    MIN_WIDTH, so that a solve (and a training run) meets only a few widths (one CUDA graph
    or compiled function each); None (all D groups, masked) where that is not smaller
    than D."""
    width = max(MIN_WIDTH, 1 << max(count - 1, 0).bit_length())
    return None if width >= D else width


def first_columns(mask: Tensor, width: int) -> Tuple[Tensor, Tensor]:
    """The indices [B, width] (width <= D) of the first ``width`` True entries of each row
    of mask [B, D] (other columns where a row has fewer) and which of them are real,
    without a host sync: a stable sort puts each row's True entries first, in order."""
    idx = torch.argsort(mask.to(torch.int8), dim=-1, descending=True, stable=True)[:, :width]
    return idx, torch.gather(mask, 1, idx)


def hessian_factors(
    X: Tensor, Y: Tensor, beta: Tensor, l1: Tensor, l2: Tensor, smoothing: float,
    gram: Optional[Tensor] = None, V: Optional[Tensor] = None, gather: bool = True,
    pairs: Optional[Tuple[Tensor, Tensor]] = None, width: Optional[int] = None,
    norms: Optional[Tensor] = None, curvature_at_beta: Optional[Tuple[Tensor, ...]] = None,
) -> HessianFactors:
    """The factors of H at beta, in beta's dtype (docs/math.md, 7). ``gram`` = X X^T may be
    passed when lambda1 = 0 in every task (then a = 1, b = 0); ``V`` = X^T (Y - beta) when
    the caller has it already. The groups with b_j > 0 are gathered to the largest count
    in the batch (one host sync; tasks with fewer are padded with zero columns); with
    ``gather=False`` all D groups are kept, zero-weighted off that set (no sync), or with
    ``width`` as well the first ``width`` of that set (no sync either; the caller knows
    that no task has more: groups past it would be left out).
    ``pairs`` (p, q) [B, D]: the Newton model of the interior-point solver's group pairs
    (ipm_groups.py; docs/math.md, 6) instead of the generalized Hessian; ``norms``: V's
    row norms, passed with V; ``curvature_at_beta``: ``curvature``'s output at this point
    where the caller has it."""
    B, S, _ = X.shape
    W = Y.shape[-1]
    work = beta.dtype
    l2 = l2.to(work)
    shift = (smoothing / l2).expand(B, 1, 1)
    if gram is not None:
        return HessianFactors(gram.to(work) / l2, None, None, shift)
    V = correlations(X, Y - beta) if V is None else V  # [B, D, W]
    n_safe, a, b, rank_one = curvature(V, l1, pairs, norms) if curvature_at_beta is None else curvature_at_beta
    Ka = torch.bmm(X * a[:, None, :], X.transpose(1, 2)).to(work) / l2
    scale = torch.sqrt(b / l2[:, :, 0].to(X.dtype)) / n_safe  # zero off the rank-one groups
    if not gather and width is None:  # every group, masked: no host sync, D columns
        return HessianFactors(Ka, X, V * scale[..., None], shift)
    if gather:  # the largest count in the batch: one host sync
        width = int(rank_one.sum(-1).max()) if rank_one.numel() else 0
        if width == 0:
            return HessianFactors(Ka, None, None, shift)
    idx, real = first_columns(rank_one, width)  # tasks with fewer: zero-weighted columns
    G = torch.gather(V, 1, idx[..., None].expand(B, width, W)) * (torch.gather(scale, 1, idx) * real)[..., None]
    return HessianFactors(Ka, torch.gather(X, 2, idx[:, None, :].expand(B, S, width)), G, shift)


def dual_hessian(
    X: Tensor, Y: Tensor, beta: Tensor, l1: Tensor, l2: Tensor, smoothing: float,
    gram: Optional[Tensor] = None, V: Optional[Tensor] = None,
) -> Tensor:
    """Hessian of the dual objective f at beta as a dense matrix [B, S W, S W] (index
    i * W + c), in beta's dtype; see ``hessian_factors``."""
    return hessian_factors(X, Y, beta, l1, l2, smoothing, gram, V).dense(Y.shape[-1])
