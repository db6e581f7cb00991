"""Step length of the interior-point steps for lambda1 > 0 (docs/math.md, 6).

grad f is only piecewise smooth there, and full Newton steps can oscillate across its
kinks, so each step takes the longest of alpha, alpha / 2, ..., alpha / 2^K whose point at
most doubles the merit ||r_d||_inf + mu, or else the one of least merit; chosen per task.
Two ways to the same choice:

    backtrack             tries the candidates in turn; stops (one host sync per try) as
                          soon as every task has its step: usually one gradient (CPU)
    batched_line_search   evaluates every candidate in one pair of products with (K + 1) W
                          columns and picks with tensor ops: no host sync (accelerators)
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from fewshot_sparse.solvers.group_lasso_dual import correlations
from fewshot_sparse.solvers.prox import smooth_shrink

HALVINGS = 8


def merit(g: Tensor, beta: Tensor, nu: Tensor, z: Tensor) -> Tensor:
    """max |dual residual| + mean complementarity, per task [B, 1, 1] (or [..., B, 1, 1])."""
    return (g + nu - z).abs().amax((-2, -1), keepdim=True) + (beta * z).mean((-2, -1), keepdim=True)


def backtrack(gradient: Callable[[Tensor], Tensor], beta, nu, z, g, step, halvings: int = HALVINGS) -> Tensor:
    """The step length [B, 1, 1] for ``step`` (d_beta, d_nu, d_z, alpha), trying the
    candidates one after the other; ``gradient(beta)`` is grad f."""
    base = merit(g, beta, nu, z)
    best_alpha, best_merit = torch.zeros_like(step.alpha), torch.full_like(base, float("inf"))
    chosen = torch.zeros_like(base, dtype=torch.bool)
    for k in range(halvings + 1):
        a = step.alpha / 2.0**k
        b, n_, z_ = beta + a * step.d_beta, nu + a * step.d_nu, z + a * step.d_z
        m = merit(gradient(b), b, n_, z_)
        accept = ~chosen & (m <= 2.0 * base)
        better = accept | (~chosen & (m < best_merit))
        best_alpha, best_merit = torch.where(better, a, best_alpha), torch.where(better, m, best_merit)
        chosen = chosen | accept
        if bool(chosen.all()):  # usually at k = 0
            break
    return best_alpha


def batched_line_search(X, Y, l1, l2, smoothing: float, eps, beta, nu, z, g, step, halvings: int = HALVINGS) -> Tensor:
    """``backtrack``'s choice without host synchronisation, for the gradient of the
    smoothed model with parameter eps [B, 1, 1] (prox.smooth_shrink): the K + 1 candidate gradients
    come from one product X^T [Y - beta_0, ..., Y - beta_K] and one back (K + 1 times the
    columns of a gradient, in X's dtype), then the first accepted candidate (or the one of
    least merit) is picked per task."""
    B, S, W = beta.shape
    K1 = halvings + 1
    scale = 0.5 ** torch.arange(K1, dtype=beta.dtype, device=beta.device)  # [K1]
    alphas = step.alpha[None] * scale[:, None, None, None]  # [K1, B, 1, 1]
    betas = beta[None] + alphas * step.d_beta[None]  # [K1, B, S, W]
    R = (Y[None] - betas).permute(1, 2, 0, 3).reshape(B, S, K1 * W)
    V = correlations(X, R).reshape(B, -1, K1, W).transpose(1, 2)  # [B, K1, D, W]
    U = smooth_shrink(V, l1[:, None].to(X.dtype), eps[:, None]).transpose(1, 2).reshape(B, -1, K1 * W)
    Z = (torch.bmm(X, U).to(beta.dtype) / l2).reshape(B, S, K1, W).permute(2, 0, 1, 3)  # [K1, B, S, W]
    grads = Y[None] - Z
    if smoothing > 0:
        grads = grads + (smoothing / l2) * (betas - Y[None])
    m = merit(grads, betas, nu[None] + alphas * step.d_nu[None], z[None] + alphas * step.d_z[None])
    accept = m <= 2.0 * merit(g, beta, nu, z)[None]  # [K1, B, 1, 1]
    first = torch.argmax(accept.to(torch.int8), dim=0)  # the first accepted (0 if none)
    pick = torch.where(accept.any(0), first, torch.argmin(m, dim=0))
    return torch.gather(alphas, 0, pick[None])[0]
