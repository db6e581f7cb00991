"""Run a model on episodes without gradients and keep what each episode did.

``run_episodes`` is the one evaluation loop: validation during training and the
evaluation protocol (``apps/evaluate.py``: mean and 95% CI over fixed episodes) both
call it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Callable, Iterable, Optional

import torch

from fewshot_sparse.data.episodes import EpisodeBatch
from fewshot_sparse.engine.convergence import solver_stats
from fewshot_sparse.engine.step import model_device, query_loss


@dataclass
class EpisodeResults:
    """Per-episode results of E episodes (CPU tensors), in the order they were run.

    accuracy    [E]    float, fraction of the episode's queries classified correctly
    loss        [E]    float, mean cross-entropy of the episode's queries
    active      [E, D] bool, the features the episode's classifier uses
    group_norms [E, D] float, the Euclidean norm of each feature's weight row
    class_ids   [E, N] int64, the (split-level) class of each episode label
    iterations, gap, converged [E]: the solver's report (None for closed-form heads)
    """

    accuracy: torch.Tensor
    loss: torch.Tensor
    active: torch.Tensor
    group_norms: torch.Tensor
    class_ids: torch.Tensor
    iterations: Optional[torch.Tensor] = None
    gap: Optional[torch.Tensor] = None
    converged: Optional[torch.Tensor] = None

    @property
    def n_episodes(self) -> int:
        return int(self.accuracy.shape[0])

    def solver(self) -> Optional[dict]:
        """The solver's statistics over episodes (engine/convergence.py); None for
        closed-form heads."""
        return solver_stats(self.iterations, self.gap, self.converged)

    def summary(self) -> dict:
        """Means over episodes as floats (accuracy, loss, active_fraction, solver stats)."""
        out = {"accuracy": float(self.accuracy.mean()), "loss": float(self.loss.mean()),
               "active_fraction": float(self.active.float().mean())}
        s = self.solver()
        if s is not None:
            out.update(solver_iterations=s["mean_iterations"], gap_max=s["max_gap"],
                       unconverged=float(s["unconverged"]))
        return out


@torch.no_grad()
def run_episodes(model: torch.nn.Module, batches: Iterable[EpisodeBatch], *,
                 normalize: Optional[Callable[[EpisodeBatch], EpisodeBatch]] = None,
                 amp: bool = False) -> EpisodeResults:
    """Evaluate ``model`` (switched to eval mode, restored afterwards) on every episode of
    ``batches``. ``normalize`` maps a batch (already on the model's device) to the
    network's input, e.g. the data package's eval-time normalisation."""
    device = model_device(model)
    was_training = model.training
    model.eval()
    parts: dict[str, list] = {f.name: [] for f in fields(EpisodeResults)}
    try:
        for batch in batches:
            batch = batch.to(device, non_blocking=True)
            if normalize is not None:
                batch = normalize(batch)
            out = model(batch, amp=True) if amp else model(batch)
            loss, correct = query_loss(out.logits, batch.query_labels)
            parts["accuracy"].append(correct.float().mean(1))
            parts["loss"].append(loss.mean(1))
            parts["active"].append(out.active.bool())
            parts["group_norms"].append(out.weights.float().norm(dim=-1))
            parts["class_ids"].append(batch.class_ids)
            if out.info is not None:
                parts["iterations"].append(out.info.iterations)
                parts["gap"].append(out.info.gap.float())
                parts["converged"].append(out.info.converged.bool())
    finally:
        model.train(was_training)
    if not parts["accuracy"]:
        raise ValueError("run_episodes: no episodes to run")
    return EpisodeResults(**{k: torch.cat(v).cpu() if v else None for k, v in parts.items()})
