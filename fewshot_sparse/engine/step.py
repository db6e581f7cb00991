"""One meta-training step: encode, solve the B inner problems, cross-entropy on queries.

Works for any ``EpisodicModel`` (images or vector data): the batch is moved to the device
of the model's parameters, so the caller never names a device.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F

from fewshot_sparse.data.episodes import EpisodeBatch
from fewshot_sparse.heads.output import HeadOutput


def model_device(model: torch.nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def head_stats(out: HeadOutput) -> dict:
    """Sparsity and solver statistics of one head output, as plain floats."""
    stats = {"active_fraction": float(out.active.float().mean())}
    info = out.info
    if info is None:
        stats.update(solver_iterations=0.0, gap_max=0.0, unconverged=0.0)
    else:
        stats.update(
            solver_iterations=float(info.iterations.float().mean()),
            gap_max=float(info.gap.float().max()),
            unconverged=float((~info.converged.bool()).sum()),
        )
    return stats


def episode_loss(out: HeadOutput, batch: EpisodeBatch, label_smoothing: float = 0.0):
    """Mean cross-entropy over all query points of all tasks, and per-query correctness."""
    logits = out.logits.float()
    labels = batch.query_labels
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                           label_smoothing=label_smoothing)
    correct = logits.argmax(-1) == labels
    return loss, correct


def meta_train_step(model: torch.nn.Module, batch: EpisodeBatch,
                    optimizer: torch.optim.Optimizer, *, label_smoothing: float = 0.0,
                    augment: Optional[Callable[[EpisodeBatch], EpisodeBatch]] = None,
                    amp: bool = False) -> dict:
    """One SGD step on a batch of episodes; returns floats: loss, accuracy,
    active_fraction, solver_iterations (mean over tasks), gap_max (largest relative
    duality gap), unconverged (number of tasks whose solver missed its tolerance).

    ``augment`` maps an EpisodeBatch (already on the model's device) to an augmented one.
    ``amp`` runs the encoder in bfloat16 on CUDA (ignored on CPU); the head stays float32.
    The model is put in train mode.
    """
    model.train()
    batch = batch.to(model_device(model), non_blocking=True)
    if augment is not None:
        batch = augment(batch)
    # Any module mapping an EpisodeBatch to a HeadOutput works; amp needs EpisodicModel.
    out = model(batch, amp=True) if amp else model(batch)
    loss, correct = episode_loss(out, batch, label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    stats = {"loss": float(loss.detach()), "accuracy": float(correct.float().mean())}
    stats.update(head_stats(out))
    return stats
