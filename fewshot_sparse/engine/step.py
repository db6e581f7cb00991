"""One meta-training step: encode, solve the B inner problems, cross-entropy on queries.

Works for any ``EpisodicModel`` (images or vector data): the batch is moved to the device
of the model's parameters, so the caller never names a device.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from fewshot_sparse.data.episodes import EpisodeBatch
from fewshot_sparse.engine.convergence import solver_stats
from fewshot_sparse.heads.output import HeadOutput
from fewshot_sparse.solvers.info import SolverInfo


def model_device(model: torch.nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def head_stats(out: HeadOutput) -> dict:
    """Sparsity and solver statistics of one head output, as plain floats
    (``solver_iterations``: mean over tasks, ``gap_max``, ``unconverged``: 0 for
    closed-form heads)."""
    return usage_stats([out.active], [out.info])


def usage_stats(actives: Sequence[torch.Tensor], infos: Sequence[Optional[SolverInfo]]) -> dict:
    """``head_stats`` of several head outputs (the micro-batches of one batch) taken
    together: one reduction over all their tasks."""
    stats = {"active_fraction": float(torch.cat([a.float() for a in actives]).mean())}
    s = None
    if all(i is not None for i in infos):
        s = solver_stats(*(torch.cat([getattr(i, k) for i in infos]) for k in ("iterations", "gap", "converged")))
    stats.update(solver_iterations=s["mean_iterations"] if s else 0.0,
                 gap_max=s["max_gap"] if s else 0.0,
                 unconverged=float(s["unconverged"]) if s else 0.0)
    return stats


def query_loss(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0):
    """Cross-entropy of each query [B, Q] and whether it is classified right [B, Q], from
    logits [B, Q, W] (computed in float32) and labels [B, Q]."""
    logits = logits.float()
    b, q, w = logits.shape
    loss = F.cross_entropy(logits.reshape(b * q, w), labels.reshape(-1),
                           label_smoothing=label_smoothing, reduction="none").reshape(b, q)
    return loss, logits.argmax(-1) == labels


def episode_loss(out: HeadOutput, batch: EpisodeBatch, label_smoothing: float = 0.0):
    """Mean cross-entropy over all query points of all tasks, and per-query correctness."""
    loss, correct = query_loss(out.logits, batch.query_labels, label_smoothing)
    return loss.mean(), correct


def split_batch(batch: EpisodeBatch, k: int) -> list[EpisodeBatch]:
    """``batch`` cut along the task dimension into ``k`` consecutive micro-batches."""
    b = batch.n_tasks
    if k < 1 or b % k:
        raise ValueError(f"accumulate={k} must divide the batch's {b} tasks")
    size = b // k

    def part(t, i):
        return None if t is None else t[i * size:(i + 1) * size]

    return [replace(batch, support_images=part(batch.support_images, i),
                    support_labels=part(batch.support_labels, i),
                    query_images=part(batch.query_images, i),
                    query_labels=part(batch.query_labels, i),
                    class_ids=part(batch.class_ids, i),
                    factors=part(batch.factors, i)) for i in range(k)]


def meta_train_step(model: torch.nn.Module, batch: EpisodeBatch,
                    optimizer: torch.optim.Optimizer, *, label_smoothing: float = 0.0,
                    augment: Optional[Callable[[EpisodeBatch], EpisodeBatch]] = None,
                    amp: bool = False, accumulate: int = 1) -> dict:
    """One SGD step on a batch of episodes; returns floats: loss, accuracy,
    active_fraction, solver_iterations (mean over tasks), gap_max (largest relative
    duality gap), unconverged (number of tasks whose solver missed its tolerance).

    ``augment`` maps an EpisodeBatch (already on the model's device) to an augmented one.
    ``amp`` runs the encoder in bfloat16 on CUDA (ignored on CPU); the head stays float32.
    ``accumulate`` = k: the (augmented) batch is cut into k micro-batches of tasks, each
    encoded and back-propagated on its own with its share of the batch loss, and the
    summed gradients make one optimizer step: the step of the whole batch, up to
    floating-point order, with a k-th of the activation memory. Exactly so for encoders
    that treat episodes independently; BatchNorm normalises over each micro-batch
    instead of the whole batch, as it does per GPU under DDP (docs/usage.md).
    The model is put in train mode.
    """
    model.train()
    batch = batch.to(model_device(model), non_blocking=True)
    if augment is not None:
        batch = augment(batch)  # the whole batch: the same random draws for every k
    micro = split_batch(batch, accumulate) if accumulate != 1 else [batch]
    total = batch.query_labels.numel()
    optimizer.zero_grad(set_to_none=True)
    loss_sum, correct_sum, parts = 0.0, 0.0, []
    no_sync = getattr(model, "no_sync", None)  # DDP: all-reduce on the last backward only
    for i, mb in enumerate(micro):
        last = i == len(micro) - 1
        ctx = no_sync() if (no_sync is not None and not last) else contextlib.nullcontext()
        with ctx:
            # Any module mapping an EpisodeBatch to a HeadOutput works; amp needs
            # EpisodicModel.
            out = model(mb, amp=True) if amp else model(mb)
            loss, correct = episode_loss(out, mb, label_smoothing)
            share = mb.query_labels.numel() / total
            (loss * share).backward()
        loss_sum += share * float(loss.detach())
        correct_sum += float(correct.float().sum())
        parts.append((out.active.detach(), out.info))
    optimizer.step()
    stats = {"loss": loss_sum, "accuracy": correct_sum / total}
    stats.update(usage_stats(*zip(*parts)))
    return stats
