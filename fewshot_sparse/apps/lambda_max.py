"""lambda_max of a task: the smallest lambda1 at which the group-Lasso SVM uses no
feature (W* = 0), for the lambda path's ratio grid (lambda1 = ratio * lambda_max).

docs/math.md section 4 ("All features off"): W* = 0 iff the minimiser beta* of the dual
without the BST term has ||(X^T (Y - beta*))_j|| <= lambda1 for every feature j; then
lambda_max = max_j ||(X^T (Y - beta*))_j||. The minimiser, per support point i of class
y_i among W classes:

* smoothing s > 0: the rest of the dual, <Y, beta> + (s / (2 lambda2)) ||beta - Y||^2, is
  strictly convex and symmetric in the wrong classes, so beta*_i puts t on y_i and
  (1 - t) / (W - 1) on every other class, with t = max(0, 1 - (W - 1) lambda2 / (s W))
  (set the derivative in t to zero). lambda_max is then **exact**.
* s = 0: every beta_i on the wrong classes is a minimiser; the uniform one (the limit
  s -> 0 above) gives a **sufficient** value: at lambda1 >= it, W* = 0 for sure, and the
  exact threshold (the minimum over those beta of the largest row norm) may be lower.

Both cases give Y - beta* = (1 - t) (Y - U) with U uniform over the wrong classes.
"""

from __future__ import annotations

import torch
from torch import Tensor


def lambda_max(support: Tensor, support_labels: Tensor, n_way: int, lambda2: float = 1.0,
               smoothing: float = 0.0) -> Tensor:
    """Per-task lambda_max [B] of support features [B, S, D] with labels [B, S]
    (exact for ``smoothing > 0``, sufficient for ``smoothing = 0``; module docstring)."""
    Y = torch.nn.functional.one_hot(support_labels.long(), n_way).to(support.dtype)
    M = Y - (1.0 - Y) / (n_way - 1)            # Y - U: +1 on y_i, -1/(W-1) elsewhere
    t = 0.0
    if smoothing > 0:
        t = max(0.0, 1.0 - (n_way - 1) * lambda2 / (smoothing * n_way))
    V = torch.bmm(support.transpose(1, 2), M) * (1.0 - t)   # [B, D, W]
    return V.norm(dim=-1).amax(dim=-1)


def lambda_max_is_exact(smoothing: float) -> bool:
    return smoothing > 0


__all__ = ["lambda_max", "lambda_max_is_exact"]
