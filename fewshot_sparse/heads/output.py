"""The one result type every head returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from fewshot_sparse.solvers.info import SolverInfo


@dataclass
class HeadOutput:
    """Result of ``head(query, support, support_labels, n_way)`` for B tasks.

    logits  [B, Q, W]  scores of each query point for each of the task's classes
    weights [B, D, W]  the fitted linear classifier (prototypes for ProtoNet)
    active  [B, D]     bool, the features the task uses (non-zero weight row)
    info    the solver's per-task report, or None for closed-form heads
    beta    [B, S, W]  the dual solution (group-Lasso SVM heads; None for the others),
            detached, float64 from the interior-point solver:
            ``head(..., beta0=out.beta)`` warm-starts the same episodes
    """

    logits: torch.Tensor
    weights: torch.Tensor
    active: torch.Tensor
    info: Optional[SolverInfo] = None
    beta: Optional[torch.Tensor] = None
