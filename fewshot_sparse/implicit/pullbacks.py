"""The implicit gradient's two pullbacks in closed form (docs/math.md, 7, "The pullback in
closed form"): plain tensor functions, no autograd, so that the backward is a dozen
operations (a handful of kernels compiled) instead of autograd replaying the maps
W(beta, theta) and grad f(beta, theta) operation by operation. The tests compare them
with autograd on those maps.

X [B, S, D], Y and beta [B, S, W], l1 and l2 [B, 1, 1] in X's dtype, G = dL/dW [B, D, W];
the products run in X's dtype, as the forward's do.
"""

from __future__ import annotations

from typing import Tuple

from torch import Tensor

from fewshot_sparse.solvers.group_lasso_dual import correlations, feature_products
from fewshot_sparse.solvers.prox import block_soft_threshold, block_soft_threshold_vjp


def weights_pullback(X: Tensor, Y: Tensor, beta: Tensor, l1: Tensor, l2: Tensor, G: Tensor) -> Tuple[Tensor, Tensor]:
    """(g_beta = d<G, W(beta)>/d beta [B, S, W] in beta's dtype, the adjoint system's
    right-hand side; V = X^T (Y - beta) [B, D, W], which the adjoint solve and
    ``parameter_pullback`` take again). With P the pullback of BST at V for G / lambda2,
    g_beta = -X P."""
    V = correlations(X, Y - beta)
    P, _ = block_soft_threshold_vjp(V, l1, G / l2)
    return -feature_products(X, P).to(beta.dtype), V


def parameter_pullback(X: Tensor, Y: Tensor, beta: Tensor, l1: Tensor, l2: Tensor, smoothing: float, G: Tensor,
                       u: Tensor, V: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """(dL/dX [B, S, D], dL/dlambda1 [B, 1, 1], dL/dlambda2 [B, 1, 1]) of
    <G, W(beta, theta)> - <u, grad f(beta, theta)> at fixed beta, for the adjoint u
    [B, S, W] and V = X^T (Y - beta). With U = BST(V, lambda1) and T = G + X^T u the whole objective is
    <U, T> / lambda2 - <Y, u> - (s / lambda2) <beta - Y, u>; so, with P the pullback of
    BST for T / lambda2: dX = (Y - beta) P^T + u U^T / lambda2, dlambda1 = BST's, and
    dlambda2 = -<U, T> / lambda2^2 + (s / lambda2^2) <beta - Y, u>."""
    R = (Y - beta).to(X.dtype)
    U = block_soft_threshold(V, l1)
    ux = u.to(X.dtype)
    T = G + correlations(X, ux)
    P, dl1 = block_soft_threshold_vjp(V, l1, T / l2)
    dX = R @ P.transpose(1, 2) + (ux / l2) @ U.transpose(1, 2)
    dl2 = -(U * T).sum((1, 2), keepdim=True) / (l2 * l2)
    if smoothing > 0:
        dl2 = dl2 + (smoothing * ((beta - Y) * u).sum((1, 2), keepdim=True)).to(X.dtype) / (l2 * l2)
    return dX, dl1, dl2
