"""Optimality functions of the group-Lasso multiclass (Crammer-Singer) SVM dual.

Per task (support X [S, D], one-hot labels Y [S, W], weights W [D, W], rows = features)

    P(W) = sum_i max_c [1{c != y_i} + x_i.w_c - x_i.w_{y_i}]
           + lambda1 * sum_j ||W_j,:||_2 + (lambda2 / 2) ||W||_F^2

has the dual over beta [S, W] (each row in the probability simplex)

    min_beta f(beta) = ||BST(X^T (Y - beta), lambda1)||^2 / (2 lambda2) + <Y, beta>
                       [+ (s / (2 lambda2)) ||beta - Y||^2]          (docs/math.md, 2-3)

with W(beta) = BST(X^T (Y - beta), lambda1) / lambda2 and D(beta) = S - f(beta) <= P*.
This module holds the problem, not an algorithm: objective values, gradient, duality
gap, KKT residual and the Lipschitz bound, all batched over a leading task dimension B.
Every algorithm (group_lasso_ipm.py, group_lasso_fista.py) and the implicit gradient
(fewshot_sparse.implicit) use these functions.
"""

from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
from torch import Tensor

from fewshot_sparse.solvers.prox import block_soft_threshold, project_rows_to_simplex

Scalar = Union[float, Tensor]


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


LAMBDA_ERROR = "need finite lambda2 > 0 and lambda1 >= 0 in every task"


def invalid_lambdas(l1: Tensor, l2: Tensor) -> Tensor:
    """[] bool: some task's lambda1 < 0, lambda2 <= 0, or either not finite."""
    return (l2 <= 0).any() | (l1 < 0).any() | ~(torch.isfinite(l1).all() & torch.isfinite(l2).all())


def check_lambdas(l1: Tensor, l2: Tensor) -> None:
    """lambda1 >= 0 and lambda2 > 0 in every task (one host sync, before any iteration)."""
    if bool(invalid_lambdas(l1, l2)):
        raise ValueError(LAMBDA_ERROR)


_ROUNDING_FLOOR = 0.5  # fitted on D = 64 / 640 / 16,000 features (math.md 6, "Dtypes")


FLOOR_MISS = 100.0  # a stopped gap within this factor of rounding_floor: X's rounding may be why


def rounding_floor(X: Tensor, lambda2: Scalar) -> Tensor:
    """The relative duality gap [B] below which X's dtype cannot certify a solve, estimated
    (docs/math.md, 6, "Dtypes"): W and the gradients come from products with X, which
    cancel (V = X^T (Y - beta) and X W are small against their terms), and for lambda1 > 0
    an active group's weights from the difference ||V_j|| - lambda1 = lambda2 ||W_j||;
    products rounded at u (X's unit roundoff) resolve the gap to about
    0.5 u mean ||x_i||^2 / lambda2 * sqrt(S / D) (round-off adds up like a random walk
    over the S points and the D features). 0 where X is float64."""
    B, S, D = X.shape
    l2 = task_param(lambda2, B, X).detach().flatten()
    if X.dtype == torch.float64:
        return torch.zeros_like(l2)
    sq = (X.detach() * X.detach()).sum(-1).mean(-1)  # [B] mean ||x_i||^2
    return _ROUNDING_FLOOR * (torch.finfo(X.dtype).eps / 2) * sq / l2 * (S / max(D, 1)) ** 0.5


def needs_float64(X: Tensor, lambda2: Scalar, tol: float) -> bool:
    """Whether X's dtype is too coarse for a solve to ``tol``: some task's
    ``rounding_floor`` above tol / 2 (weak regularisation; one host sync)."""
    return bool(too_coarse(rounding_floor(X, lambda2), tol))


def too_coarse(floor: Tensor, tol: float) -> Tensor:
    """[] bool: some task's rounding floor [B] above tol / 2."""
    return (floor > tol / 2).any()


def solve_flags(X: Tensor, l1: Tensor, l2: Tensor, tol: float) -> Tuple[Tensor, Tensor]:
    """(flags [4] bool: [invalid lambdas, some lambda1 > 0, some lambda1 = 0, X's dtype too
    coarse for tol (``needs_float64``)], the rounding floor [B]) for l1, l2 [B, 1, 1]: what
    a solver's set-up branches on, read in one host sync."""
    floor = rounding_floor(X, l2)
    flags = [invalid_lambdas(l1, l2), (l1 > 0).any(), (l1 == 0).any(), too_coarse(floor, tol)]
    return torch.stack(flags), floor


def correlations(X: Tensor, R: Tensor) -> Tensor:
    """V = X^T R [B, D, W] for R = Y - beta [B, S, W], in X's dtype. Formed as (R^T X)^T:
    the [W, S] x [S, D] product is several times faster on CPU than [D, S] x [S, W] with a
    transposed X, and V keeps that layout, which bmm(X, U) also prefers."""
    return torch.bmm(R.to(X.dtype).transpose(1, 2), X).transpose(1, 2)


def feature_products(X: Tensor, U: Tensor) -> Tensor:
    """X U [B, S, k] for U [B, D, k], in X's dtype. Formed as (U^T X^T)^T for the same
    reason as ``correlations``: with k a few ways, [k, D] x [D, S] runs 2-4x faster on CPU
    than [S, D] x [D, k] (measured at S = 75, D = 640 and 16,000)."""
    return torch.bmm(U.to(X.dtype).transpose(1, 2), X.transpose(1, 2)).transpose(1, 2)


def dual_weights(X: Tensor, Y: Tensor, beta: Tensor, lambda1: Scalar, lambda2: Scalar) -> Tensor:
    """W(beta) = BST(X^T (Y - beta), lambda1) / lambda2  [B, D, W]  (docs/math.md, 2)."""
    B = X.shape[0]
    l1, l2 = task_param(lambda1, B, X), task_param(lambda2, B, X)
    return block_soft_threshold(correlations(X, Y - beta), l1) / l2


def scores(X, Y, beta, l1, l2, K=None, norms=False):
    """(Z = X W(beta) [B, S, W], ||U||^2 [B], sum_j ||U_j|| [B] or None) with U = lambda2 W,
    in beta's dtype. K = X X^T [B, S, S] may be given when lambda1 = 0 in every task: then
    W = X^T (Y - beta) / lambda2 and everything lives in the S-space (S^2 W instead of S D W
    per product)."""
    R = Y - beta
    if K is not None:
        KR = torch.bmm(K, R)
        return KR / l2, (R * KR).sum((1, 2)), (torch.zeros_like(l2[:, 0, 0]) if norms else None)
    return scores_from_correlations(X, correlations(X, R), l1, l2, beta.dtype, norms)


def scores_from_correlations(X, V, l1, l2, dtype, norms=True):
    """``scores`` given V = X^T (Y - beta) [B, D, W]; the outputs are cast to ``dtype``."""
    U = block_soft_threshold(V, l1.to(X.dtype))
    sq, l21 = shrunk_norms(U, dtype)
    return feature_products(X, U).to(dtype) / l2, sq, (l21 if norms else None)


def shrunk_norms(U: Tensor, dtype: torch.dtype) -> Tuple[Tensor, Tensor]:
    """(||U||^2, sum_j ||U_j||) per task [B] for U [B, D, W], cast to ``dtype``: one pass
    over the rows, several times faster than a norm on V's transposed layout."""
    rows = (U * U).sum(-1)
    return rows.sum(-1).to(dtype), torch.sqrt(rows).sum(-1).to(dtype)


def hinge_loss(Z: Tensor, Y: Tensor, l2: Tensor, smoothing: float) -> Tensor:
    """Sum of the (smoothed, docs/math.md 5) multiclass hinge losses given the scores Z [B]."""
    if smoothing > 0:
        return smoothed_hinge_loss(Z, Y, smoothing / l2)
    margins = 1.0 - Y + Z - (Z * Y).sum(-1, keepdim=True)
    return margins.amax(-1).sum(-1)


def smoothed_hinge_loss(Z: Tensor, Y: Tensor, mu: Tensor) -> Tensor:
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
    loss = hinge_loss(torch.bmm(X, W), Y, l2, smoothing)
    reg = l1[:, 0, 0] * torch.linalg.vector_norm(W, dim=-1).sum(-1) + 0.5 * l2[:, 0, 0] * (W * W).sum((1, 2))
    return loss + reg


def dual_value(Y: Tensor, beta: Tensor, sq: Tensor, l2: Tensor, smoothing: float) -> Tensor:
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
    U = block_soft_threshold(correlations(X, Y - beta), l1)
    return dual_value(Y, beta, (U * U).sum((1, 2)), l2, smoothing)


def gap_from_scores(Y, beta, l1, l2, smoothing, Z, sq, l21) -> Tuple[Tensor, Tensor, Tensor]:
    """(primal P(W(beta)), dual S - f(beta), relative gap) per task (docs/math.md, 4), from
    one evaluation of the scores: lambda2/2 ||W||^2 = ||U||^2 / (2 lambda2)."""
    dual = dual_value(Y, beta, sq, l2, smoothing)
    l1v, l2v = l1[:, 0, 0], l2[:, 0, 0]
    primal = hinge_loss(Z, Y, l2, smoothing) + l1v * l21 / l2v + sq / (2.0 * l2v)
    rel = (primal - dual) / primal.abs().clamp_min(1.0)
    return primal, dual, rel


def duality_gap(X, Y, beta, l1, l2, smoothing, K=None) -> Tuple[Tensor, Tensor, Tensor]:
    """(primal, dual, relative gap) per task at a feasible beta; l1, l2 of shape [B, 1, 1]."""
    return gap_from_scores(Y, beta, l1, l2, smoothing, *scores(X, Y, beta, l1, l2, K, norms=True))


def dual_gradient(X, Y, beta, l1, l2, smoothing, K=None) -> Tensor:
    """grad f(beta) = Y - X W(beta) [+ (s / lambda2)(beta - Y)]  [B, S, W] (docs/math.md, 3)."""
    return gradient_from_scores(Y, beta, l2, smoothing, scores(X, Y, beta, l1, l2, K)[0])


def gradient_from_scores(Y, beta, l2, smoothing, Z) -> Tensor:
    g = Y - Z
    if smoothing > 0:
        g = g + (smoothing / l2) * (beta - Y)
    return g


def gram(X: Tensor) -> Tensor:
    """The smaller Gram matrix, X X^T [B, S, S] or X^T X [B, D, D]."""
    return torch.bmm(X, X.transpose(1, 2)) if X.shape[1] <= X.shape[2] else torch.bmm(X.transpose(1, 2), X)


def squared_spectral_norm(X: Tensor, G: Optional[Tensor] = None) -> Tensor:
    """||X_b||_2^2 for each task [B]: the largest eigenvalue of the smaller Gram matrix
    (S x S or D x D), computed exactly by a batched symmetric eigensolver."""
    G = gram(X) if G is None else G
    return torch.linalg.eigvalsh(G)[..., -1].clamp_min(0.0)


def lipschitz_constant(X: Tensor, l2: Tensor, smoothing: float, G: Optional[Tensor] = None) -> Tensor:
    """L = (||X||_2^2 + s) / lambda2 per task [B, 1, 1], the gradient's Lipschitz constant
    (docs/math.md, 3 and 5)."""
    return (squared_spectral_norm(X, G).reshape(-1, 1, 1) + smoothing) / l2


def kkt_residual(X, Y, beta, l1, l2, smoothing, K=None) -> Tensor:
    """||beta - proj(beta - grad f(beta) / L)||_F per task [B]: the projected fixed-point
    residual, zero exactly at the solutions (docs/math.md, 4)."""
    step = 1.0 / lipschitz_constant(X, l2, smoothing)
    z = project_rows_to_simplex(beta - step * dual_gradient(X, Y, beta, l1, l2, smoothing, K))
    return torch.linalg.vector_norm((beta - z).flatten(1), dim=-1)


def safe_groups(V: Tensor, col_norms: Tensor, l1: Tensor, l2: Tensor, smoothing: float, gap: Tensor) -> Tensor:
    """The groups that may be non-zero at the solution, [B, D] bool (gap-safe screening,
    docs/math.md, 6; needs smoothing s > 0). f is (s / lambda2)-strongly convex, so a
    feasible beta with absolute gap G has ||beta - beta*|| <= rho = sqrt(2 lambda2 G / s), and
    ||V_j(beta*)|| <= ||V_j(beta)|| + ||x^j|| rho; below lambda1 the group is certifiably zero.
    V = X^T (Y - beta) [B, D, W], col_norms = ||x^j|| [B, D], gap [B] absolute (P - D)."""
    rho = torch.sqrt(2.0 * l2[:, 0] * gap.clamp_min(0.0)[:, None] / smoothing)  # [B, 1]
    return torch.linalg.vector_norm(V, dim=-1).to(rho.dtype) + col_norms * rho >= l1[:, 0]
