"""Step length of the interior-point steps for lambda1 > 0 (docs/math.md, 6).

The Newton steps follow the smoothed model, whose curvature still changes fast near the
group kinks: full steps can cycle (measured: a warm-started task whose dual residual went
round a 4-cycle between 1e-2 and 8e-2 forever). Each step therefore takes the longest of
alpha, alpha / 2, ..., alpha / 2^K whose point at most multiplies the merit
||r_d||_inf + mu by GROWTH, or else the one of least merit; chosen per task. GROWTH = 3
(eighth session, docs/math.md 6): 3-12% fewer iterations than 2 on every measured set and
no unconverged task; 4 and 10 leave 2 tasks of the 128-task regression set unconverged
(gap 2.4e-3), and 10 let a warm-started sweep task cycle in the fifth session. A candidate is
scored with the model gradient at its own smoothing eps (eps_of), which is what the
solver's next iterate uses.
Two ways to the same choice:

    backtrack             tries the candidates in turn (one host sync per try) with the
                          solver's own evaluation, and returns the chosen point's: a full
                          step that passes (the usual case) costs nothing extra (CPU)
    batched_line_search   evaluates every candidate in one pair of products with (K + 1) W
                          columns and picks with tensor ops: no host sync (accelerators)
"""

from __future__ import annotations

from typing import Callable, Tuple

import torch
from torch import Tensor

from fewshot_sparse.solvers.group_lasso_dual import correlations
from fewshot_sparse.solvers.prox import smooth_shrink

HALVINGS = 8
GROWTH = 3.0


def merit(g: Tensor, beta: Tensor, nu: Tensor, z: Tensor) -> Tensor:
    """max |dual residual| + mean complementarity, per task [B, 1, 1] (or [..., B, 1, 1])."""
    return (g + nu - z).abs().amax((-2, -1), keepdim=True) + (beta * z).mean((-2, -1), keepdim=True)


def backtrack(evaluate: Callable, eps_of: Callable[[Tensor, Tensor], Tensor], beta, nu, z, g, step,
              halvings: int = HALVINGS) -> Tuple[Tensor, tuple]:
    """(the step length [B, 1, 1] for ``step`` (d_beta, d_nu, d_z, alpha), the evaluation at
    the chosen point). ``evaluate(beta, eps)`` returns a tuple of per-task tensors whose
    last entry is the model gradient; ``g`` is that gradient at the current point."""
    base = merit(g, beta, nu, z)
    best_alpha, best_merit = torch.zeros_like(step.alpha), torch.full_like(base, float("inf"))
    chosen = torch.zeros_like(base, dtype=torch.bool)
    best = None
    for k in range(halvings + 1):
        a = step.alpha / 2.0**k
        b, n_, z_ = beta + a * step.d_beta, nu + a * step.d_nu, z + a * step.d_z
        ev = evaluate(b, eps_of(b, z_))
        m = merit(ev[-1], b, n_, z_)
        accept = ~chosen & (m <= GROWTH * base)
        better = accept | (~chosen & (m < best_merit))
        best_alpha, best_merit = torch.where(better, a, best_alpha), torch.where(better, m, best_merit)
        best = ev if best is None else _select(better[:, 0, 0], ev, best)
        chosen = chosen | accept
        if bool(chosen.all()):  # usually at k = 0
            break
    return best_alpha, best


def _select(mask: Tensor, new, old):
    """Per task (mask [B]), the entries of ``new`` over those of ``old`` (nested tuples)."""
    if isinstance(new, tuple):
        return tuple(_select(mask, n, o) for n, o in zip(new, old))
    if new is None:
        return None
    return torch.where(mask.reshape(-1, *([1] * (new.dim() - 1))), new, old)


def batched_line_search(X, Y, l1, l2, smoothing: float, eps_of, beta, nu, z, g, step, halvings: int = HALVINGS) -> Tensor:
    """``backtrack``'s choice without host synchronisation, for the gradient of the
    smoothed model (prox.smooth_shrink) at each candidate's own eps_of(beta, z) [..., B, 1, 1]:
    the K + 1 candidate gradients come from one product X^T [Y - beta_0, ..., Y - beta_K]
    and one back (K + 1 times the columns of a gradient, in X's dtype), then the first
    accepted candidate (or the one of least merit) is picked per task."""
    B, S, W = beta.shape
    K1 = halvings + 1
    scale = 0.5 ** torch.arange(K1, dtype=beta.dtype, device=beta.device)  # [K1]
    alphas = step.alpha[None] * scale[:, None, None, None]  # [K1, B, 1, 1]
    betas = beta[None] + alphas * step.d_beta[None]  # [K1, B, S, W]
    zs = z[None] + alphas * step.d_z[None]
    eps = eps_of(betas, zs).transpose(0, 1)  # [B, K1, 1, 1]
    R = (Y[None] - betas).permute(1, 2, 0, 3).reshape(B, S, K1 * W)
    V = correlations(X, R).reshape(B, -1, K1, W).transpose(1, 2)  # [B, K1, D, W]
    U = smooth_shrink(V, l1[:, None].to(X.dtype), eps).transpose(1, 2).reshape(B, -1, K1 * W)
    Z = (torch.bmm(X, U).to(beta.dtype) / l2).reshape(B, S, K1, W).permute(2, 0, 1, 3)  # [K1, B, S, W]
    grads = Y[None] - Z
    if smoothing > 0:
        grads = grads + (smoothing / l2) * (betas - Y[None])
    m = merit(grads, betas, nu[None] + alphas * step.d_nu[None], zs)
    accept = m <= GROWTH * merit(g, beta, nu, z)[None]  # [K1, B, 1, 1]
    first = torch.argmax(accept.to(torch.int8), dim=0)  # the first accepted (0 if none)
    pick = torch.where(accept.any(0), first, torch.argmin(m, dim=0))
    return torch.gather(alphas, 0, pick[None])[0]
