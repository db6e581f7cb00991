"""ResNet-12 exactly as in MetaOptNet (Lee et al., CVPR 2019, models/ResNet12_embedding.py).

Four residual stages of 64-160-320-640 channels; each stage: three 3x3 convs (no bias)
with BatchNorm and LeakyReLU(0.1), a 1x1 conv + BN shortcut, a residual add and ReLU,
then 2x2 max-pooling. Regularisation as in MetaOptNet: dropout(drop_rate) after the first
two stages, DropBlock after the last two with a keep rate that ramps linearly from 1 to
1 - drop_rate over ``dropblock_ramp`` training forward passes of the stage.

On 84x84 inputs the output is 640x5x5 = 16,000 features, or 640 with ``avg_pool``.

Differences from MetaOptNet, all deliberate:
- The ramp counter is a buffer (saved in checkpoints, so resume is exact) and only counts
  training forward passes. MetaOptNet encodes support and query in two calls per step;
  we encode them in one, so the same ramp length covers twice as many steps unless you
  halve ``dropblock_ramp``. (Under MetaOptNet's DataParallel the Python counter was
  incremented on throw-away replicas and never advanced.)
- On inputs smaller than 84x84 the DropBlock size is capped at the feature-map size.
- ``in_channels`` is configurable (3 in MetaOptNet) and average pooling is adaptive
  (AvgPool2d(5) in MetaOptNet, identical on 84x84 inputs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fewshot_sparse.encoders.dropblock import DropBlock


def conv3x3(in_planes: int, out_planes: int) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)


class BasicBlock(nn.Module):
    def __init__(self, inplanes: int, planes: int, *, drop_rate: float = 0.0,
                 drop_block: bool = False, block_size: int = 1, dropblock_ramp: int = 40000):
        super().__init__()
        self.conv1, self.bn1 = conv3x3(inplanes, planes), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = conv3x3(planes, planes), nn.BatchNorm2d(planes)
        self.conv3, self.bn3 = conv3x3(planes, planes), nn.BatchNorm2d(planes)
        self.relu = nn.LeakyReLU(0.1)
        self.maxpool = nn.MaxPool2d(2)
        self.downsample = nn.Sequential(
            nn.Conv2d(inplanes, planes, kernel_size=1, stride=1, bias=False),
            nn.BatchNorm2d(planes))
        self.drop_rate = drop_rate
        self.drop_block = drop_block
        self.block_size = block_size
        self.dropblock_ramp = dropblock_ramp
        self.dropblock = DropBlock(block_size)
        self.register_buffer("num_batches_tracked", torch.zeros((), dtype=torch.long))

    def keep_rate(self) -> float:
        ramp = self.drop_rate / self.dropblock_ramp * int(self.num_batches_tracked)
        return max(1.0 - ramp, 1.0 - self.drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out = self.maxpool(self.relu(out + self.downsample(x)))
        if self.drop_rate > 0 and self.training:
            if self.drop_block:
                self.num_batches_tracked += 1
                feat = out.shape[2]
                bs = min(self.block_size, feat)  # small inputs: blocks fit the map
                gamma = (1.0 - self.keep_rate()) / bs ** 2 * feat ** 2 / (feat - bs + 1) ** 2
                out = self.dropblock(out, gamma, block_size=bs)
            else:
                out = F.dropout(out, p=self.drop_rate, training=True)
        return out


class ResNet12MetaOptNet(nn.Module):
    """MetaOptNet's ResNet-12. drop_rate 0.1 and dropblock_size 5 are MetaOptNet's
    settings for miniImageNet/tieredImageNet (2 for CIFAR-FS/FC100)."""

    def __init__(self, in_channels: int = 3, *, avg_pool: bool = False,
                 drop_rate: float = 0.1, dropblock_size: int = 5,
                 dropblock_ramp: int = 40000, channels=(64, 160, 320, 640)):
        super().__init__()
        if len(channels) != 4:
            raise ValueError(f"channels must name 4 stages, got {channels}")
        stages, inplanes = [], in_channels
        for i, planes in enumerate(channels):
            last_two = i >= 2
            stages.append(BasicBlock(inplanes, planes, drop_rate=drop_rate,
                                     drop_block=last_two,
                                     block_size=dropblock_size if last_two else 1,
                                     dropblock_ramp=dropblock_ramp))
            inplanes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avg_pool = avg_pool
        self.out_channels = inplanes
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="leaky_relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        if self.avg_pool:
            x = F.adaptive_avg_pool2d(x, 1)
        return x.flatten(1)
