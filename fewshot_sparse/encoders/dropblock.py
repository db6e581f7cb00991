"""DropBlock (Ghiasi et al., 2018) as MetaOptNet applies it.

Randomness: the block seeds are drawn from torch's global RNG, which the engine seeds
from the config's ``seed`` (and saves/restores in checkpoints), so training is
reproducible and resumable without threading a generator through every module.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DropBlock(nn.Module):
    """Zero ``block_size`` x ``block_size`` squares of a feature map, then rescale.

    Seeds are Bernoulli(gamma) on the (H - bs + 1) x (W - bs + 1) grid of block corners;
    each seed zeroes the square it starts; the survivors are scaled by
    numel / number-kept, as in MetaOptNet. (MetaOptNet builds the block mask by
    index arithmetic; a max-pool over the padded seed mask gives the intended mask.)
    Identity in eval mode or when gamma is 0.
    """

    def __init__(self, block_size: int):
        super().__init__()
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        self.block_size = block_size

    def forward(self, x: torch.Tensor, gamma: float, block_size: int | None = None) -> torch.Tensor:
        if not self.training or gamma <= 0:
            return x
        bs = self.block_size if block_size is None else block_size
        b, c, h, w = x.shape
        if h < bs or w < bs:
            raise ValueError(f"feature map {h}x{w} smaller than DropBlock size {bs}")
        seeds = torch.bernoulli(
            torch.full((b, c, h - bs + 1, w - bs + 1), float(gamma), device=x.device))
        dropped = F.max_pool2d(F.pad(seeds, (bs - 1, bs - 1, bs - 1, bs - 1)), bs, stride=1)
        keep = (1.0 - dropped).to(x.dtype)
        scale = keep.numel() / keep.sum().clamp_min(1.0)
        return x * keep * scale
