"""EpisodicModel: an encoder and a head applied to an EpisodeBatch.

Support and query images go through the encoder in one pass (concatenated, then split),
so BatchNorm sees one batch and the encoder runs once per step. Under mixed precision
only the encoder runs in bfloat16: its features are cast back to float32 and the head
solves outside autocast (float64 models stay float64).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from fewshot_sparse.data.episodes import EpisodeBatch
from fewshot_sparse.encoders import build_encoder
from fewshot_sparse.heads import build_head
from fewshot_sparse.heads.output import HeadOutput


class EpisodicModel(nn.Module):
    """``encoder`` maps [M, *input] to [M, ...] features; ``head`` is a few-shot head.

    channels_last: feed image batches to the encoder in NHWC (faster convolutions on
        recent GPUs; call ``model.to(memory_format=torch.channels_last)`` for the weights).
    amp (argument of forward): run the encoder under bfloat16 autocast.
    Both only take effect on CUDA tensors; on CPU they are ignored, so a config can name
    them and still run anywhere.
    """

    def __init__(self, encoder: nn.Module, head: nn.Module, *, channels_last: bool = False):
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.channels_last = channels_last

    def encode(self, x: torch.Tensor, amp: bool = False) -> torch.Tensor:
        """Encode a flat batch [M, *input] to features [M, D] (float32 at least)."""
        cuda = x.is_cuda
        if cuda and self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        ctx = (torch.autocast("cuda", dtype=torch.bfloat16) if amp and cuda
               else contextlib.nullcontext())
        with ctx:
            feats = self.encoder(x)
        feats = feats.reshape(feats.shape[0], -1)
        return feats.float() if feats.dtype in (torch.float16, torch.bfloat16) else feats

    def features(self, batch: EpisodeBatch, amp: bool = False):
        """Support and query features, [B, N*K, D] and [B, N*Q, D], from one encoder pass."""
        s, q = batch.support_images, batch.query_images
        b, n_s, n_q = s.shape[0], s.shape[1], q.shape[1]
        flat = torch.cat([s.reshape(b * n_s, *s.shape[2:]), q.reshape(b * n_q, *q.shape[2:])])
        feats = self.encode(flat, amp=amp)
        support = feats[: b * n_s].reshape(b, n_s, -1)
        query = feats[b * n_s:].reshape(b, n_q, -1)
        return support, query

    def forward(self, batch: EpisodeBatch, amp: bool = False) -> HeadOutput:
        support, query = self.features(batch, amp=amp)
        # The head is solved in float32 even inside an outer autocast region.
        ctx = (torch.autocast("cuda", enabled=False) if support.is_cuda
               else contextlib.nullcontext())
        with ctx:
            return self.head(query, support, batch.support_labels, batch.n_way)


def build_model(config) -> EpisodicModel:
    """The EpisodicModel a Config names (encoder and head from their registries)."""
    encoder = build_encoder(config.encoder.name, **config.encoder.kwargs)
    head = build_head(config.head.name, **config.head.kwargs)
    return EpisodicModel(encoder, head, channels_last=config.train.channels_last)
