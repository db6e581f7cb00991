"""Batched episode augmentation on whatever device the images are on.

:class:`EpisodeAugment` is MetaOptNet's training augmentation (random crop with zero
padding, colour jitter, random horizontal flip) followed by normalisation, applied to
a whole batch of images [..., C, H, W] in [0, 1] at once, with every random number
drawn from an explicit ``torch.Generator``. :class:`Normalize` is the evaluation
transform. Both accept a tensor or an EpisodeBatch (support and query images).

Differences from torchvision's per-image ColorJitter: the three jitters are applied
in a fixed order (brightness, contrast, saturation) rather than a random one, and
hue is not jittered (MetaOptNet does not use it).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import torch
import torch.nn.functional as F

from .episodes import EpisodeBatch

__all__ = ["EpisodeAugment", "Normalize", "MINI_IMAGENET_MEAN", "MINI_IMAGENET_STD"]

# MetaOptNet's miniImageNet statistics (pixel values / 255)
MINI_IMAGENET_MEAN = (120.39586422 / 255.0, 115.59361427 / 255.0, 104.54012653 / 255.0)
MINI_IMAGENET_STD = (70.68188272 / 255.0, 68.27635443 / 255.0, 72.54505529 / 255.0)
_GREY = (0.299, 0.587, 0.114)


def _apply(fn, x):
    if isinstance(x, EpisodeBatch):
        return replace(x, support_images=fn(x.support_images), query_images=fn(x.query_images))
    return fn(x)


class Normalize:
    """(x - mean) / std per channel; mean/std of length C (or 1)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        if len(self.mean) != len(self.std) or any(s <= 0 for s in self.std):
            raise ValueError(f"mean {self.mean} and std {self.std} must have equal lengths and std > 0")

    def _tensor(self, x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        c = x.shape[-3]
        if len(self.mean) not in (1, c):
            raise ValueError(f"Normalize has {len(self.mean)} channel statistics, images have {c} channels")
        shape = (-1, 1, 1)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(shape)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(shape)
        return x.sub_(mean).div_(std) if inplace else (x - mean) / std

    def __call__(self, x):
        return _apply(self._tensor, x)

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean}, std={self.std})"


class EpisodeAugment:
    """Random crop (``padding`` zeros each side, crop back to H x W), colour jitter
    (``brightness``, ``contrast``, ``saturation`` factors drawn in [1-a, 1+a]), random
    horizontal flip, then Normalize(mean, std).

    ``generator``: the torch.Generator every random number comes from (a CPU one seeded
    with ``seed`` when not given); random numbers are drawn on the generator's device
    and moved to the images' device. ``__call__(x, generator=None)`` may override it.
    """

    def __init__(self, mean: Sequence[float] = MINI_IMAGENET_MEAN, std: Sequence[float] = MINI_IMAGENET_STD, *,
                 padding: int = 8, brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.4,
                 hflip: bool = True, generator: torch.Generator | None = None, seed: int = 0):
        self.normalize = Normalize(mean, std)
        self.padding, self.hflip = int(padding), bool(hflip)
        self.brightness, self.contrast, self.saturation = float(brightness), float(contrast), float(saturation)
        self.generator = generator if generator is not None else torch.Generator().manual_seed(seed)

    def __call__(self, x, generator: torch.Generator | None = None):
        g = generator if generator is not None else self.generator
        return _apply(lambda t: self._tensor(t, g), x)

    def _rand(self, g: torch.Generator, n: int, device) -> torch.Tensor:
        return torch.rand(n, generator=g, device=g.device).to(device)

    def _tensor(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        lead, (c, h, w) = x.shape[:-3], x.shape[-3:]
        x = x0 = x.reshape(-1, c, h, w)
        n, dev = x.shape[0], x.device
        if n == 0:
            return self.normalize(x).reshape(*lead, c, h, w)
        p = self.padding
        if p > 0:  # crop an H x W window out of the zero-padded image at (oy, ox)
            oy = (self._rand(g, n, dev) * (2 * p + 1)).long().clamp_(max=2 * p)
            ox = (self._rand(g, n, dev) * (2 * p + 1)).long().clamp_(max=2 * p)
            x = _crop_cpu(x, oy, ox, p) if dev.type == "cpu" else _crop_gather(x, oy, ox, p)

        def factor(a):
            return (1.0 + a * (2.0 * self._rand(g, n, dev) - 1.0)).to(x.dtype).view(n, 1, 1, 1)

        x = x.clone() if x.data_ptr() == x0.data_ptr() else x  # in-place from here on
        if self.brightness > 0:
            x.mul_(factor(self.brightness)).clamp_(0.0, 1.0)
        if self.contrast > 0:  # blend with the mean grey level: x * f + m * (1 - f)
            f = factor(self.contrast)
            m = _grey(x.mean(dim=(-2, -1), keepdim=True))
            x.mul_(f).add_(m * (1.0 - f)).clamp_(0.0, 1.0)
        if self.saturation > 0 and c == 3:  # blend with the grey image
            f = factor(self.saturation)
            x.mul_(f).add_(_grey(x).mul_(1.0 - f)).clamp_(0.0, 1.0)
        if self.hflip:
            flip = (self._rand(g, n, dev) < 0.5).view(n, 1, 1, 1)
            x = torch.where(flip, x.flip(-1), x)  # no host sync (unlike indexing by nonzero())
        return self.normalize._tensor(x, inplace=True).reshape(*lead, c, h, w)


def _grey(x: torch.Tensor) -> torch.Tensor:
    if x.shape[-3] != 3:
        return x.mean(dim=-3, keepdim=True)
    r, g, b = x.unbind(-3)
    return (r * _GREY[0]).add_(g, alpha=_GREY[1]).add_(b, alpha=_GREY[2]).unsqueeze(-3)


def _crop_gather(x: torch.Tensor, oy: torch.Tensor, ox: torch.Tensor, p: int) -> torch.Tensor:
    """Batched crop as two gathers (rows, then columns): no host sync, good on GPU."""
    n, c, h, w = x.shape
    padded = F.pad(x, (p, p, p, p))
    rows = (oy[:, None] + torch.arange(h, device=x.device)).view(n, 1, h, 1).expand(n, c, h, w + 2 * p)
    cols = (ox[:, None] + torch.arange(w, device=x.device)).view(n, 1, 1, w).expand(n, c, h, w)
    return padded.gather(2, rows).gather(3, cols)


def _crop_cpu(x: torch.Tensor, oy: torch.Tensor, ox: torch.Tensor, p: int) -> torch.Tensor:
    """Same crop as slice copies, several times faster than gathers on CPU."""
    n, c, h, w = x.shape
    out = torch.zeros_like(x)
    for i, (dy, dx) in enumerate(zip((oy - p).tolist(), (ox - p).tolist())):
        # output pixel (r, s) shows input pixel (r + dy, s + dx)
        r0, r1, s0, s1 = max(0, -dy), min(h, h - dy), max(0, -dx), min(w, w - dx)
        if r0 < r1 and s0 < s1:
            out[i, :, r0:r1, s0:s1] = x[i, :, r0 + dy:r1 + dy, s0 + dx:s1 + dx]
    return out
