"""Step length of the interior-point steps for lambda1 > 0 (docs/math.md, 6).

||V_j|| is not linear in beta, so a full step can land where the Newton model, exact
for the linear parts, is poor; each step therefore takes the longest of alpha,
alpha / 2, ..., alpha / 2^K whose point at most multiplies the merit
||r_d||_inf + ||r_p||_inf + mu (dual residual, the group pairs' residual, mean
complementarity) by GROWTH, or else the one of least merit; chosen per task. GROWTH = 3
(eighth session, docs/math.md 6). Two ways to the same choice:

    backtrack             tries the candidates in turn (one host sync per try) with the
                          solver's own evaluation, and returns the chosen point's: a full
                          step that passes (the usual case) costs nothing extra (CPU)
    batched_line_search   evaluates every candidate in one pair of products with (K + 1) W
                          columns and picks with tensor ops: no host sync (accelerators)
"""

from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch
from torch import Tensor

from fewshot_sparse.solvers.group_lasso_dual import correlations, feature_products
from fewshot_sparse.solvers.ipm_groups import model_shrink, pair_residual
from fewshot_sparse.solvers.prox import reciprocal_or_zero, row_norms

HALVINGS = 8
GROWTH = 3.0


def merit(g: Tensor, beta: Tensor, nu: Tensor, z: Tensor, rp: Optional[Tensor] = None,
          comp: Optional[Tensor] = None, on: Optional[Tensor] = None) -> Tensor:
    """max |dual residual| (+ max |r_p|) + mean complementarity, per task [B, 1, 1] (or
    [..., B, 1, 1]); rp and comp [..., B, D]: the group pairs' residual and p q / lambda2,
    zero where the pairs are off (on [B, 1] is 0)."""
    m = (g + nu - z).abs().amax((-2, -1))
    total, count = (beta * z).sum((-2, -1)), beta.shape[-1] * beta.shape[-2]
    if rp is not None and rp.shape[-1] > 0:  # (screening may have dropped every group)
        m, total, count = m + rp.abs().amax(-1), total + comp.sum(-1), count + rp.shape[-1] * on[:, 0]
    return (m + total / count)[..., None, None]


def state_merit(st, l1: Tensor, l2: Tensor, on: Tensor) -> Tensor:
    """The merit [B, 1, 1] of the solver state's point (V's row norms in st["norms"]), for
    a state that does not carry it (the start, after screening); the iterations carry the
    merit of the point their line search chose."""
    p, q = st["excess"], st["slack"]
    return merit(st["gm"], st["beta"], st["nu"], st["z"], pair_residual(st["norms"], p, q, l1, on), p * q * (on / l2[:, :, 0]), on)


def point_after(st, step, alpha: Tensor, pairs: bool) -> tuple:
    """(beta, nu, z[, excess, slack]) a step alpha [B, 1, 1] along ``step`` from the point
    of state ``st`` (with the group pairs' excess and slack where ``pairs``)."""
    point = (st["beta"] + alpha * step.d_beta, st["nu"] + alpha * step.d_nu, st["z"] + alpha * step.d_z)
    if pairs:
        point += (st["excess"] + alpha[..., 0] * step.d_p, st["slack"] + alpha[..., 0] * step.d_q)
    return point


def backtrack(evaluate: Callable, l1: Tensor, l2: Tensor, on: Tensor, st, step, halvings: int = HALVINGS) -> Tuple[Tensor, tuple, Tensor, tuple]:
    """(the step length [B, 1, 1] for ``step`` from the point of state ``st``, the
    evaluation at the chosen point, its merit [B, 1, 1], the point (beta, nu, z, excess,
    slack)). ``evaluate(beta, excess)`` returns (grad f, gaps, V, V's row norms, model
    gradient), as ipm_iteration.evaluate."""
    on_l2 = on / l2[:, :, 0]
    base = st["merit"]
    chosen = torch.zeros_like(base, dtype=torch.bool)
    best = None
    for k in range(halvings + 1):
        a = step.alpha / 2.0**k
        point = point_after(st, step, a, pairs=True)
        b, n_, z_, p_, q_ = point
        ev = evaluate(b, p_)
        m = merit(ev[-1], b, n_, z_, pair_residual(ev[3], p_, q_, l1, on), p_ * q_ * on_l2, on)
        accept = ~chosen & (m <= GROWTH * base)
        candidate = (a, m, ev, point)
        if best is None:  # the first candidate is the one to beat
            best = candidate
        else:
            best = _select((accept | (~chosen & (m < best[1])))[:, 0, 0], candidate, best)
        chosen = chosen | accept
        if bool(chosen.all()):  # usually at k = 0
            break
    alpha, m, ev, point = best
    return alpha, ev, m, point


def _select(mask: Tensor, new, old):
    """Per task (mask [B]), the entries of ``new`` over those of ``old`` (nested tuples)."""
    if isinstance(new, tuple):
        return tuple(_select(mask, n, o) for n, o in zip(new, old))
    if new is None:
        return None
    return torch.where(mask.reshape(-1, *([1] * (new.dim() - 1))), new, old)


def batched_line_search(X, Y, l1, l2, on, smoothing: float, st, step, halvings: int = HALVINGS) -> Tuple[Tensor, Tensor]:
    """``backtrack``'s choice (step length and merit) without host synchronisation: the
    K + 1 candidates' model gradients come from one product X^T [Y - beta_0, ..., Y -
    beta_K] and one back (K + 1 times the columns of a gradient, in X's dtype), then the
    first accepted candidate (or the one of least merit) is picked per task."""
    beta, nu, z, p, q = st["beta"], st["nu"], st["z"], st["excess"], st["slack"]
    B, S, W = beta.shape
    K1 = halvings + 1
    scale = 0.5 ** torch.arange(K1, dtype=beta.dtype, device=beta.device)  # [K1]
    alphas = step.alpha[None] * scale[:, None, None, None]  # [K1, B, 1, 1]
    betas = beta[None] + alphas * step.d_beta[None]  # [K1, B, S, W]
    zs = z[None] + alphas * step.d_z[None]
    ps = (p[None] + alphas[..., 0] * step.d_p[None]).transpose(0, 1)  # [B, K1, D]
    qs = (q[None] + alphas[..., 0] * step.d_q[None]).transpose(0, 1)
    R = (Y[None] - betas).permute(1, 2, 0, 3).reshape(B, S, K1 * W)
    V = correlations(X, R).reshape(B, -1, K1, W).transpose(1, 2)  # [B, K1, D, W]
    n = row_norms(V)
    U = model_shrink(V, reciprocal_or_zero(n), ps, l1[..., None].to(X.dtype)).transpose(1, 2).reshape(B, -1, K1 * W)
    Z = (feature_products(X, U).to(beta.dtype) / l2).reshape(B, S, K1, W).permute(2, 0, 1, 3)  # [K1, B, S, W]
    grads = Y[None] - Z
    if smoothing > 0:
        grads = grads + (smoothing / l2) * (betas - Y[None])
    on_l2 = on / l2[:, :, 0]  # [B, 1]
    rp = pair_residual(n, ps, qs, l1[..., None], on[..., None]).transpose(0, 1)  # [K1, B, D]
    comp = (ps * qs * on_l2[..., None]).transpose(0, 1)
    m = merit(grads, betas, nu[None] + alphas * step.d_nu[None], zs, rp, comp, on)
    accept = m <= GROWTH * st["merit"][None]  # [K1, B, 1, 1]
    first = torch.argmax(accept.to(torch.int8), dim=0)  # the first accepted (0 if none)
    pick = torch.where(accept.any(0), first, torch.argmin(m, dim=0))[None]
    return torch.gather(alphas, 0, pick)[0], torch.gather(m, 0, pick)[0]
