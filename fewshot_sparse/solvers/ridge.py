"""Batched closed-form ridge regression onto one-hot targets (the R2D2 base learner).

    W = argmin_W ||X W - Y||_F^2 + lam ||W||_F^2 = (X^T X + lam I_D)^-1 X^T Y
                                                 = X^T (X X^T + lam I_S)^-1 Y   (Woodbury)

Few-shot support sets have S << D, so the S x S form is the cheap one; when S > D the
D x D form is used instead. Both are exact (the identity above), solved by Cholesky
(the system is symmetric positive definite for lam > 0) and differentiable by autograd.
"""

from __future__ import annotations

from typing import Union

import torch
from torch import Tensor


def ridge_weights(X: Tensor, Y: Tensor, lam: Union[float, Tensor]) -> Tensor:
    """X [B, S, D], Y [B, S, W], lam > 0 (float or tensor of shape [] or [B]) -> W [B, D, W]."""
    lam = torch.as_tensor(lam, dtype=X.dtype, device=X.device)
    if lam.dim() == 1:
        lam = lam[:, None, None]
    s, d = X.shape[-2], X.shape[-1]
    Xt = X.transpose(-1, -2)
    if s <= d:
        K = X @ Xt + lam * torch.eye(s, dtype=X.dtype, device=X.device)
        L = torch.linalg.cholesky(K)
        return Xt @ torch.cholesky_solve(Y, L)
    K = Xt @ X + lam * torch.eye(d, dtype=X.dtype, device=X.device)
    L = torch.linalg.cholesky(K)
    return torch.cholesky_solve(Xt @ Y, L)
