"""Group-Lasso Crammer-Singer SVM head: the sparse base learner of this project.

Per task (support X [S, D], one-hot labels Y [S, W], weights W [D, W]):

    P(W) = sum_i max_c [1{c != y_i} + x_i.w_c - x_i.w_{y_i}]
           + lambda1 sum_j ||W_j,:||_2 + (lambda2 / 2) ||W||_F^2 ,   logits = scale * X_query W

solved for all B tasks at once by the batched dual solver
(fewshot_sparse.solvers.group_lasso_svm) and differentiated implicitly
(fewshot_sparse.implicit). lambda1 = 0 is MetaOptNet's SVM-CS head (crammer_singer.py).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from fewshot_sparse.heads.common import HyperParameter, active_rows, one_hot, outside_autocast, solve_dtype
from fewshot_sparse.heads.output import HeadOutput
from fewshot_sparse.heads.validation import check_head_inputs, check_nonnegative
from fewshot_sparse.implicit.group_lasso_svm_grad import group_lasso_svm_fit
from fewshot_sparse.solvers.group_lasso_svm import GroupLassoSVMDual


def _warm_start(beta0: Optional[Tensor], labels: Tensor, n_way: int, dtype, device) -> Optional[Tensor]:
    """Check a warm start (an earlier ``HeadOutput.beta``) against the episodes' shape."""
    if beta0 is None:
        return None
    expected = (*labels.shape, n_way)
    if not isinstance(beta0, Tensor) or tuple(beta0.shape) != expected:
        got = f"shape {tuple(beta0.shape)}" if isinstance(beta0, Tensor) else type(beta0).__name__
        raise ValueError(f"beta0 must be [B, S, n_way] = {list(expected)} (an earlier "
                         f"HeadOutput.beta of the same episodes), got {got}")
    if not bool(beta0.isfinite().all()):
        raise ValueError("beta0 (the warm start) holds NaN or inf values")
    # never below the solve's dtype, never rounded down (HeadOutput.beta may be float64)
    return beta0.detach().to(dtype=torch.promote_types(dtype, beta0.dtype), device=device)


class ConvergenceWarning(RuntimeWarning):
    """Some task's dual solver stopped at ``max_iter`` above its duality-gap tolerance.
    Heads never warn (they return ``info``); the places that aggregate results do, once."""


class GroupLassoSVMHead(nn.Module):
    """``head(query [B,Q,D], support [B,S,D], support_labels [B,S], n_way) -> HeadOutput``.

    lambda1 >= 0   group-Lasso weight (0: no sparsity, plain Crammer-Singer SVM)
    lambda2 > 0    ridge weight (C = 1 / lambda2 in SVM terms)
    smoothing      s >= 0, dual smoothing (s / (2 lambda2)) ||beta - Y||^2 (see the solver)
    tol, max_iter  the solver's relative duality-gap target and iteration cap
    method         "ipm" (interior point, the default: tens of iterations on any features)
                   or "fista" (first-order twin); see fewshot_sparse.solvers.group_lasso_svm
    cuda_graph     on CUDA, replay each solver iteration as one captured CUDA graph (the
                   default; false launches every operation, and frees the graph's memory)
    compiled       fuse the solver's iterations (its start, checks and implicit gradient
                   too) with torch.compile (the sync-free mode, on any device): a few dozen
                   kernels an iteration instead of a few hundred, after tens of seconds of
                   compiling per episode shape (docs/usage.md, "GPU speed")
    mode           "implicit" (exact gradients from the optimality conditions) or
                   "unrolled" (autograd through the iterations; for comparison only)
    learn_lambdas  learn lambda1 and lambda2 in log-space (a lambda of 0 stays fixed at 0)
    learn_scale    learn the logit scale (MetaOptNet's ``scale``), initialised to init_scale

    The solve runs in float64 for float64 features, in float32 otherwise (float16 and
    bfloat16 features are cast up), with autocast off inside a caller's mixed-precision
    region; outputs are in that dtype. ``active`` marks the
    features with a non-zero weight row; ``info`` is the solver's per-task report
    (iterations, gap, converged): the head never warns, its callers aggregate ``info``.
    ``beta`` is the dual solution [B, S, W] (detached); pass it back as ``beta0=`` to
    warm-start the same episodes at nearby hyperparameters (the lambda path,
    apps/sweep.py): a start that already meets ``tol`` is returned after 0 iterations.
    The module holds hyperparameters only, never a support set.
    """

    def __init__(
        self,
        lambda1: float = 0.1,
        lambda2: float = 1.0,
        smoothing: float = 0.0,
        tol: float = 1e-4,
        max_iter: int = 100,
        mode: str = "implicit",
        learn_lambdas: bool = False,
        learn_scale: bool = False,
        init_scale: float = 1.0,
        method: str = "ipm",
        cuda_graph: bool = True,
        compiled: bool = False,
    ):
        super().__init__()
        check_nonnegative("lambda1", lambda1)
        check_nonnegative("lambda2", lambda2, strict=True)
        check_nonnegative("smoothing", smoothing)
        if mode not in ("implicit", "unrolled"):
            raise ValueError(f"mode must be 'implicit' or 'unrolled', got {mode!r}")
        self.lambda1 = HyperParameter("lambda1", lambda1, learnable=learn_lambdas, log_space=True)
        self.lambda2 = HyperParameter("lambda2", lambda2, learnable=learn_lambdas, log_space=True)
        self.scale = HyperParameter("scale", init_scale, learnable=learn_scale)
        self.solver = GroupLassoSVMDual(tol=tol, max_iter=max_iter, smoothing=smoothing, method=method,
                                        cuda_graph=None if cuda_graph else False,
                                        sync_free=True if compiled else None, compiled=compiled)
        self.mode = mode

    @outside_autocast
    def forward(self, query: Tensor, support: Tensor, support_labels: Tensor, n_way: int,
                beta0: Optional[Tensor] = None) -> HeadOutput:
        check_head_inputs(query, support, support_labels, n_way)
        dtype, device = solve_dtype(support.dtype), support.device
        beta0 = _warm_start(beta0, support_labels, n_way, dtype, device)
        X, q = support.to(dtype), query.to(dtype)
        weights, beta, info = group_lasso_svm_fit(
            X,
            one_hot(support_labels, n_way, dtype),
            self.lambda1(dtype, device),
            self.lambda2(dtype, device),
            self.solver,
            mode=self.mode,
            beta0=beta0,
        )
        logits = self.scale(dtype, device) * (q @ weights)
        return HeadOutput(logits=logits, weights=weights, active=active_rows(weights), info=info,
                          beta=beta.detach())

    def extra_repr(self) -> str:
        s = self.solver
        return f"method={s.method}, mode={self.mode}, tol={s.tol:g}, max_iter={s.max_iter}, smoothing={s.smoothing:g}"
