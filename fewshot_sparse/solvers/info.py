"""Per-task convergence report shared by every iterative solver."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class SolverInfo:
    """What a batched solver reports for each of its B tasks (all tensors of shape [B]).

    ``gap`` is the relative duality gap (P - D) / max(|P|, 1) of the final iterate, see
    docs/math.md; ``converged`` is ``gap <= tol``. A solver never stops silently
    unconverged: callers read ``converged`` (and ``iterations``) from here.
    """

    iterations: torch.Tensor
    primal: torch.Tensor
    dual: torch.Tensor
    gap: torch.Tensor
    converged: torch.Tensor

    @property
    def all_converged(self) -> bool:
        return bool(self.converged.all())

    def summary(self) -> str:
        n = self.converged.numel()
        return (
            f"{int(self.converged.sum())}/{n} tasks converged, "
            f"iterations max {int(self.iterations.max())}, "
            f"max relative gap {float(self.gap.max()):.2e}"
        )


def info_to(info: SolverInfo, dtype: torch.dtype) -> SolverInfo:
    """The report with its values (primal, dual, gap) in ``dtype``."""
    return SolverInfo(iterations=info.iterations, primal=info.primal.to(dtype), dual=info.dual.to(dtype),
                      gap=info.gap.to(dtype), converged=info.converged)
