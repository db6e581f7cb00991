"""Solver statistics, reduced one way, and the one convergence warning.

Heads never warn: each returns its solver's per-task ``SolverInfo`` (iterations, relative
duality gap, converged). The places that aggregate results (a training epoch, a
validation, an evaluation shot) reduce them with :func:`solver_stats` and, when some
task missed the solver's tolerance, warn once with :func:`warn_unconverged`.
"""

from __future__ import annotations

import warnings
from typing import Optional

import torch

from fewshot_sparse.heads import ConvergenceWarning


def solver_stats(iterations: Optional[torch.Tensor], gap: Optional[torch.Tensor],
                 converged: Optional[torch.Tensor]) -> Optional[dict]:
    """``mean_iterations``, ``max_iterations``, ``max_gap`` (largest relative duality gap)
    and ``unconverged`` (tasks that missed the tolerance) over tasks; None for a
    closed-form head (no iterations)."""
    if iterations is None:
        return None
    return {"mean_iterations": float(iterations.float().mean()),
            "max_iterations": int(iterations.max()),
            "max_gap": float(gap.float().max()),
            "unconverged": int((~converged.bool()).sum())}


def warn_unconverged(where: str, unconverged: int, tasks: int, max_gap: float) -> None:
    """One ConvergenceWarning for ``where`` when some of its ``tasks`` did not converge."""
    if unconverged:
        warnings.warn(f"{where}: {int(unconverged)} of {tasks} tasks did not reach the "
                      f"solver's tolerance (largest relative duality gap {max_gap:.1e}); "
                      "lambda2 small against the features' squared norm is the usual cause "
                      "(docs/usage.md, 'Weak regularisation')", ConvergenceWarning, stacklevel=2)


__all__ = ["solver_stats", "warn_unconverged"]
