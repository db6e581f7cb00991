"""The interior-point solver's starting point (docs/math.md, 6: "Start", "Group pairs",
"Warm start"): where beta starts (``first_point``), and the state there (the multipliers, the group pairs
on their central path, the evaluation, the merit and the curvature the first Newton
matrix reads). ``first_point`` and ``interior_start`` are functions of tensors and options
only, without host synchronisation, so that compiled.py can compile each whole.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fewshot_sparse.solvers.group_lasso_dual import correlations, dual_gradient, duality_gap, gram
from fewshot_sparse.solvers.ipm_groups import central_pairs
from fewshot_sparse.solvers.ipm_iteration import WORK, Options, carried_curvature, evaluate
from fewshot_sparse.solvers.ipm_line_search import state_merit
from fewshot_sparse.solvers.ipm_systems import cholesky_solve, class_block
from fewshot_sparse.solvers.prox import project_rows_to_simplex, row_norms

FIRST_PAIRS = 0.003  # the group pairs' p q = (this lambda1)^2 for the multipliers' start
START_SCALE = {False: 0.01, True: 0.3}  # z0 / spread, lambda1 = 0 / > 0 (measured, math.md 6)
WARM_SCALE = 0.3  # lambda1 > 0: z0 times this from a caller's warm start (measured, math.md 6)


def interior_start(c, o: Options, beta: Tensor, warm: bool, bucketed: bool) -> dict:
    """The solver's state at the interior point ``beta`` [B, S, W] (on the affine set), with
    constants ``c`` (ipm_iteration.py): ``warm`` where it came from a caller's warm start,
    ``bucketed`` where the sync-free mode gathers to a width (then with the curvature and
    its count, ``carried_curvature``)."""
    X, Y, l1, l2 = c["X"], c["Y"], c["l1"], c["l2"]
    B, S, W = beta.shape
    pairs = None
    if o.smooth:  # first nearly on the kinks, for the multipliers' start below
        pairs = central_pairs(row_norms(correlations(X, Y - beta)), l1, l2, (FIRST_PAIRS * l1) ** 2 / l2)
    _, (p, d, gap), V, n, gm = evaluate(c, o, beta, pairs[0] if pairs else None)  # the steps follow gm, the model's gradient
    # multipliers' start (docs/math.md, 6): z = theta * spread_i on every entry of row
    # i, nu_i the row mean of z - grad; the dual residual starts at the gradient's
    # deviation from its row mean, and mu0 is a fraction of what a feasible z gives
    spread = (gm.amax(-1, keepdim=True) - gm.amin(-1, keepdim=True)).clamp_min(1e-3 * (1.0 + gm.abs().amax((1, 2), keepdim=True)))
    z = per_task(l1, START_SCALE) * spread.expand_as(gm)
    if warm and o.smooth:  # nearer the solution: smaller multipliers (math.md 6, "Warm start")
        z = torch.where(l1 > 0, WARM_SCALE * z, z)
    nu = (z - gm).mean(-1, keepdim=True)
    if o.smooth:  # the group pairs start on their central path (math.md 6, "Group pairs")
        weight = min(1.0, S * W / X.shape[-1])  # their total p q / lambda2 at most n mu0
        pairs = central_pairs(n, l1, l2, weight * (beta * z).mean((1, 2), keepdim=True))
        _, (p, d, gap), V, n, gm = evaluate(c, o, beta, pairs[0])
    ridge = torch.full((B, 1, 1), 1e-14, dtype=WORK, device=X.device)
    done = torch.zeros(B, dtype=torch.bool, device=X.device)
    state = dict(beta=beta, nu=nu, z=z, p=p, d=d, gap=gap, gm=gm, ridge=ridge, done=done)
    if o.smooth:
        state.update(V=V, norms=n, excess=pairs[0], slack=pairs[1])
        state["merit"] = state_merit(state, l1, l2, c["on"])
    if bucketed:
        state.update(carried_curvature(V, n, l1, *pairs))
    return state


def first_point(X: Tensor, Y: Tensor, beta0, l1: Tensor, l2: Tensor, smoothing: float, K, equality: bool):
    """(b0, its (primal, dual, gap), the interior point near it [B, S, W]) for a caller's
    warm start ``beta0`` or, with ``equality``, the start of the tasks with lambda1 = 0
    (``equality_start``; the others keep the centre 1/W). A b0 that already meets tol is
    the solver's answer; the iterations start from 0.99 b0 + 0.01 / W. K = X X^T where
    lambda1 = 0 in every task (else None); Y in WORK."""
    centre = torch.full_like(Y, 1.0 / Y.shape[-1])
    moved = None  # the tasks that leave the centre (None: all, from a caller's beta0)
    if equality:
        Kw = K if K is not None else gram(X.to(WORK))
        grad = dual_gradient(X, Y, centre, torch.zeros_like(l1), l2, smoothing, Kw)
        moved = l1 == 0
        beta0 = torch.where(moved, equality_start(class_block(Kw, l2, smoothing), grad), centre)
    b0 = project_rows_to_simplex(beta0.to(WORK))
    near = 0.99 * b0 + 0.01 * centre
    return b0, duality_gap(X, Y, b0, l1, l2, smoothing, K), near if moved is None else torch.where(moved, near, centre)


def per_task(l1: Tensor, value: dict) -> Tensor:
    """value[lambda1 > 0] per task [B, 1, 1], in l1's dtype: a task's settings follow its own
    lambda1, not its batch-mates'."""
    return torch.full_like(l1, value[False]).masked_fill_(l1 > 0, value[True])


def equality_start(A: Tensor, grad: Tensor) -> Tensor:
    """lambda1 = 0, from the centre beta = 1/W with gradient ``grad`` [B, S, W]: the minimiser
    of the quadratic f on {E beta = 1} (beta >= 0 dropped), shifted into the simplices
    (Mehrotra's start; docs/math.md, 6). H = A kron I_W with the same A [B, S, S] in every
    class, so the Newton system has d_nu = the row mean of -grad and d_beta = A^-1 (mean
    - grad): one S x S Cholesky. A task whose A is not positive definite even with a ridge
    of 1e-12 times its largest diagonal entry keeps the centre."""
    W = grad.shape[-1]
    M = A.clone()
    M.diagonal(dim1=1, dim2=2).add_(1e-12 * M.diagonal(dim1=1, dim2=2).amax(-1, keepdim=True))
    L, info = torch.linalg.cholesky_ex(M)
    beta = 1.0 / W + cholesky_solve(grad.mean(-1, keepdim=True) - grad, L)
    shift = (-1.5 * beta.amin(-1, keepdim=True)).clamp_min(0.0)  # rows stay on the affine set
    beta = (beta + shift) / (1.0 + W * shift)
    ok = (info == 0)[:, None, None] & beta.isfinite().all(-1, keepdim=True).all(-2, keepdim=True)
    return torch.where(ok, beta, 1.0 / W)
