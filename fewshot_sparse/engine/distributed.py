"""Data-parallel training with torch.distributed (launched by ``torchrun``).

``torchrun --nproc_per_node=2 -m fewshot_sparse.cli train ...`` sets RANK, WORLD_SIZE,
LOCAL_RANK and MASTER_ADDR/PORT; ``setup()`` reads them and joins the process group
(nccl on CUDA, gloo on CPU). Without them it is a single process (rank 0 of 1).
Episodes are split without overlap: rank r takes the epoch's batches r, r + world, ...
(``my_batches``); only rank 0 writes checkpoints and logs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from fewshot_sparse.engine.device import resolve_device


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup(device: str = "auto") -> tuple[DistInfo, torch.device]:
    """Join the process group named by torchrun's environment (if any); pick the device.

    ``device``: "auto" (CUDA if available, else CPU), "cpu", "cuda" or "cuda:K". Under
    DDP on CUDA each process takes GPU ``LOCAL_RANK``.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    ranks = DistInfo(int(os.environ.get("RANK", "0")), world,
                    int(os.environ.get("LOCAL_RANK", "0")))
    dev = resolve_device(device, ranks.local_rank if ranks.enabled else 0)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if ranks.enabled and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return ranks, dev


def my_batches(n_batches: int, ranks: DistInfo) -> range:
    """Indices (within an epoch of ``n_batches``) this rank trains on: r, r + world, ...
    Every rank gets the same count (the remainder n_batches % world is dropped), so all
    ranks take the same number of optimizer steps."""
    per_rank = n_batches // ranks.world_size
    return range(ranks.rank, per_rank * ranks.world_size, ranks.world_size)


def wrap(model: torch.nn.Module, ranks: DistInfo, device: torch.device) -> torch.nn.Module:
    if not ranks.enabled:
        return model
    return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)


def barrier(ranks: DistInfo) -> None:
    if ranks.enabled:
        dist.barrier()


def all_mean(values: dict, ranks: DistInfo, device: torch.device) -> dict:
    """Average a dict of floats over ranks (for logging)."""
    if not ranks.enabled or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return {k: float(v) / ranks.world_size for k, v in zip(keys, t.tolist())}


def cleanup(ranks: DistInfo) -> None:
    if ranks.enabled and dist.is_initialized():
        dist.destroy_process_group()
