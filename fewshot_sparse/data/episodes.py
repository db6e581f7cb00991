"""EpisodeBatch: B few-shot episodes, support and query, as the model consumes them."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import torch


@dataclass
class EpisodeBatch:
    """B episodes of N-way K-shot Q-query classification.

    support_images [B, N*K, C, H, W]   (or [B, N*K, F] for vector data)
    support_labels [B, N*K]  int64 in 0..N-1 (remapped per episode)
    query_images   [B, N*Q, C, H, W]
    query_labels   [B, N*Q]  int64 in 0..N-1
    class_ids      [B, N]    int64 global class index (within the split) of each episode label
    """

    support_images: torch.Tensor
    support_labels: torch.Tensor
    query_images: torch.Tensor
    query_labels: torch.Tensor
    class_ids: torch.Tensor
    n_way: int
    n_shot: int
    n_query: int
    factors: Optional[torch.Tensor] = None  # [B, N] or task metadata for synthetic data

    @property
    def n_tasks(self) -> int:
        return self.support_labels.shape[0]

    def to(self, device, non_blocking: bool = False) -> "EpisodeBatch":
        def move(t):
            return None if t is None else t.to(device, non_blocking=non_blocking)

        return replace(
            self,
            support_images=move(self.support_images),
            support_labels=move(self.support_labels),
            query_images=move(self.query_images),
            query_labels=move(self.query_labels),
            class_ids=move(self.class_ids),
            factors=move(self.factors),
        )

    def pin_memory(self) -> "EpisodeBatch":
        return replace(
            self,
            support_images=self.support_images.pin_memory(),
            support_labels=self.support_labels.pin_memory(),
            query_images=self.query_images.pin_memory(),
            query_labels=self.query_labels.pin_memory(),
            class_ids=self.class_ids.pin_memory(),
        )
