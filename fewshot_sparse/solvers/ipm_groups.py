"""The group kinks of lambda1 > 0 as primal-dual pairs of the interior-point solver
(docs/math.md, 6, "Group pairs").

The dual's penalty is a minimum over excesses p_j, one per feature group j:

    (1/(2 lambda2)) (||V_j|| - lambda1)_+^2 = min { p_j^2 / (2 lambda2) : ||V_j|| <= lambda1 + p_j },

with V = X^T (Y - beta). Each group carries p_j and the slack q_j of that constraint; its
multiplier is y_j = p_j / lambda2 (= ||W_j|| at the solution), so the pair's
complementarity is p_j q_j / lambda2, driven to sigma mu together with beta * z. The
model's weights are W_j = p_j vhat_j / lambda2 (vhat_j = V_j / ||V_j||), its Hessian
has the a I + b vhat vhat^T form of dual_hessian.py with a = p / ||V_j||, a + b =
p / (p + q), and the kinks stay out of the Newton model: a group crosses its threshold
through its own pair, as an entry of beta reaches 0 through (beta, z).

Shapes: V [B, D, W] in X's dtype, p and q [B, D] in the work dtype (float64). A task with
lambda1 = 0 in a batch with others has no kinks: ``on`` [B, 1] (1.0 where lambda1 > 0)
switches its pairs off (model weights V_j / lambda2, no residual, complementarity or
steps), so that it takes the steps it takes alone. n [B, D]: the row norms of V, which
the solver's state carries beside V (one pass over V per point).
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from fewshot_sparse.solvers.group_lasso_dual import correlations, feature_products
from fewshot_sparse.solvers.prox import reciprocal_or_zero


def central_pairs(norms: Tensor, l1: Tensor, l2: Tensor, mu: Tensor) -> Tuple[Tensor, Tensor]:
    """(p, q) [B, D] on the central path at beta, from the row norms ||V_j|| [B, D] of
    V = X^T (Y - beta): q = lambda1 + p - ||V_j|| and p q / lambda2 = mu, i.e. p the CHKS
    smoothing (u + sqrt(u^2 + 4 lambda2 mu)) / 2 of u = ||V_j|| - lambda1; l1, l2, mu
    [B, 1, 1]."""
    u = norms.to(mu.dtype) - l1[:, :, 0]
    p = 0.5 * (u + torch.sqrt(u * u + 4.0 * l2[:, :, 0] * mu[:, :, 0]))
    return p, p - u


def model_shrink(V: Tensor, inv_n: Tensor, p: Tensor, l1: Tensor) -> Tensor:
    """lambda2 times the model's weights, p_j vhat_j [..., D, W] in V's dtype (0 where
    V_j = 0), and V itself in tasks with lambda1 = 0 (l1 [..., 1, 1]); inv_n =
    reciprocal_or_zero(row_norms(V))."""
    U = (p.to(V.dtype) * inv_n)[..., None] * V
    return torch.where(l1 > 0, U, V)


def pair_residual(norms: Tensor, p: Tensor, q: Tensor, l1: Tensor, on: Tensor) -> Tensor:
    """r_p = ||V_j|| + q_j - lambda1 - p_j [..., D] in p's dtype from the row norms of V
    (0 on the constraint, and where the pairs are off); l1 [..., 1, 1], on [..., 1]."""
    return (norms.to(p.dtype) + q - l1[..., 0] - p) * on


class GroupPairs:
    """The pairs' part of one Newton step at (beta, p, q): the right-hand side they add
    to the system in beta (ipm_systems.py) and their own steps from d_beta. R [B, D] is
    lambda2 times the pairs' complementarity residual: p q for the predictor,
    p q + dp dq - lambda2 target for the corrector."""

    def __init__(self, X: Tensor, V: Tensor, n: Tensor, p: Tensor, q: Tensor, l1: Tensor, l2: Tensor, on: Tensor):
        self.X, self.p, self.q = X, p, q
        self.l2 = l2[:, :, 0]  # [B, 1]
        self.on_l2 = on / self.l2
        self.vhat = reciprocal_or_zero(n)[..., None] * V
        self.count = p.shape[-1] * on[..., None]  # [B, 1, 1]: the pairs that count in mu
        # the coefficients that ``rhs`` and ``steps`` share, formed once per Newton step
        # (each solve then costs a few fused kernels, not a dozen: kernels, not flops,
        # bound an iteration, benchmarks.md): with w = on / (p + q),
        # dp = p w dt + p r_p w - R w and dq = -(R + q dp) on / p
        self.w = on / (p + q)
        self.pw = p * self.w
        self.prw = self.pw * pair_residual(n, p, q, l1, on)
        self.minus_on_p = -on / p

    def complementarity(self, alpha: Optional[Tensor] = None, dp: Optional[Tensor] = None,
                        dq: Optional[Tensor] = None) -> Tensor:
        """sum_j p_j q_j / lambda2 [B, 1, 1] over the pairs that are on, at the current
        point or a step alpha [B, 1, 1] along (dp, dq)."""
        p, q = self.p, self.q
        if alpha is not None:
            p, q = p + alpha[..., 0] * dp, q + alpha[..., 0] * dq
        return (p * q * self.on_l2).sum(-1)[:, None, None]

    def _base(self, R: Tensor) -> Tensor:
        """p r_p w - R w [B, D]: dp's part that does not depend on d_beta."""
        return torch.addcmul(self.prw, R, self.w, value=-1.0)

    def rhs(self, R: Tensor) -> Tensor:
        """The pairs' term of the right-hand side in beta, X (vhat c (p r_p - R) / p) with
        c = 1 / (lambda2 + lambda2 q / p): [B, S, W] in the work dtype."""
        coef = (self._base(R) / self.l2).to(self.X.dtype)
        return feature_products(self.X, self.vhat * coef[..., None]).to(self.p.dtype)

    def steps(self, d_beta: Tensor, R: Tensor) -> Tuple[Tensor, Tensor]:
        """(dp, dq) [B, D] for d_beta [B, S, W]: -dt_j = vhat_j . (X^T d_beta)_j is minus
        the change of ||V_j||, dp from the linearised constraint and complementarity, dq
        from q dp + p dq = -R."""
        minus_dt = (self.vhat * correlations(self.X, d_beta)).sum(-1).to(self.p.dtype)
        dp = torch.addcmul(self._base(R), self.pw, minus_dt, value=-1.0)
        return dp, torch.addcmul(R, self.q, dp) * self.minus_on_p
