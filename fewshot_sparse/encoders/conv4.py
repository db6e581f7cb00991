"""Conv-4 (Vinyals et al., 2016; Snell et al., 2017): four blocks of
3x3 conv (padding 1) + BatchNorm + ReLU + 2x2 max-pool. 64x5x5 = 1,600 features on
84x84 inputs, 64x2x2 = 256 on 32x32."""

from __future__ import annotations

import torch
from torch import nn


class Conv4(nn.Module):
    def __init__(self, in_channels: int = 3, hidden: int = 64, out_channels: int | None = None,
                 n_blocks: int = 4):
        super().__init__()
        out_channels = hidden if out_channels is None else out_channels
        widths = [in_channels] + [hidden] * (n_blocks - 1) + [out_channels]
        self.blocks = nn.Sequential(*[
            nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout),
                          nn.ReLU(inplace=True), nn.MaxPool2d(2))
            for cin, cout in zip(widths[:-1], widths[1:])])
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x).flatten(1)
