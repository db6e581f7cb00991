"""The weights a float32 fit returns, and the report that certifies them (docs/math.md 6,
"Dtypes"): W formed from X in float64 (X^T (Y - beta) cancels; formed in X's dtype W was
up to 0.13 from optimal on ResNet-12 features), and near X's rounding floor the gap of the
W returned, evaluated in float64, with the tasks that miss tol there marked for a float64
refit. One function of tensors, so that the compiled solver runs it as one compiled call.
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

from fewshot_sparse.solvers.group_lasso_dual import (
    FLOOR_MISS,
    dual_value,
    dual_weights,
    primal_objective,
    rounding_floor,
    task_param,
)

Report = Tuple[Tensor, Tensor, Tensor, Tensor]  # primal, dual, gap, converged [B]


def certified_weights(X: Tensor, Y: Tensor, beta: Tensor, lambda1: Tensor, lambda2: Tensor, smoothing: float,
                      tol: float, report: Report) -> Tuple[Tensor, Report, Tensor]:
    """(W(beta) [B, D, W] formed in float64, the solver's ``report`` with the tasks near X's
    rounding floor re-certified, the tasks to fit again in float64 [B] bool).

    Re-certified: the tasks whose rounding floor [B] is within FLOOR_MISS of tol get the
    relative gap of the W returned (W(beta) rounded to X's dtype) and beta, in float64: the
    solver's own gap, at its float64 iterate with X's products, can be below tol while the
    returned W is not. Fit again: the unconverged tasks that stopped within FLOOR_MISS of
    their floor (the floor's estimate is low by up to 10x on some features), where X's dtype
    may be what stopped them; a solve cut short on purpose ends far above it. Eager, the
    float64 gap is only evaluated when some task needs it (one host sync); compiled, always
    (no sync: the same values)."""
    primal, dual, gap, converged = report
    B = X.shape[0]
    X64, Y64, b64 = X.detach().double(), Y.double(), beta.double()
    l1, l2 = task_param(lambda1.double(), B, X64), task_param(lambda2.double(), B, X64)
    W64 = dual_weights(X64, Y64, b64, l1, l2)
    floor = rounding_floor(X, lambda2)
    band = FLOOR_MISS * floor >= tol
    if torch.compiler.is_compiling() or bool(band.any()):
        p = primal_objective(X64, Y64, W64.to(X.dtype).double(), l1, l2, smoothing)
        # U = lambda2 W: ||U||^2 = lambda2^2 ||W||^2, the dual value without another product
        d = dual_value(Y64, b64, (l2[:, 0, 0] ** 2) * (W64 * W64).sum((1, 2)), l2, smoothing)
        g = (p - d) / p.abs().clamp_min(1.0)
        keep = lambda new, old: torch.where(band, new.to(old.dtype), old)  # noqa: E731
        primal, dual, gap, converged = keep(p, primal), keep(d, dual), keep(g, gap), keep(g <= tol, converged)
    redo = ~converged & (floor > 0) & (gap <= FLOOR_MISS * floor)
    return W64, (primal, dual, gap, converged), redo
