"""Feed images to a model at the input shape it was trained on.

A model trained on 32x32 grayscale images and evaluated on a dataset prepared at
84x84 RGB would otherwise run on inputs it never saw (a Conv-4 gives 1,600 features
instead of 256: another model). :class:`FitInput` converts a batch the way ``prepare``
converted the training images: channels first (RGB -> L with PIL's weights
0.299/0.587/0.114, L -> RGB by repetition), then a bilinear resize with antialiasing
(PIL's filter at prepare time, torch's here) to the model's side.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from ..errors import DataError
from .episodes import EpisodeBatch

__all__ = ["FitInput", "fit_images", "shape_text"]

_GREY = (0.299, 0.587, 0.114)


def shape_text(shape: Sequence[int]) -> str:
    """``(C, H, W)`` as ``HxW`` plus the channel count, for messages."""
    c, h, w = (int(v) for v in shape)
    return f"{h}x{w}x{c}"


def fit_images(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Images ``[..., C, H, W]`` in [0, 1] converted to ``shape = (C', H', W')``."""
    c_to, h_to, w_to = (int(v) for v in shape)
    c = x.shape[-3]
    lead = x.shape[:-3]
    x = x.reshape(-1, *x.shape[-3:])
    if c != c_to:
        if c == 3 and c_to == 1:
            w = torch.tensor(_GREY, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
            x = (x * w).sum(1, keepdim=True)
        elif c == 1 and c_to == 3:
            x = x.expand(-1, 3, -1, -1)
        else:
            raise DataError(f"cannot convert {c}-channel images to the model's {c_to} channels")
    if x.shape[-2:] != (h_to, w_to):
        x = F.interpolate(x.float(), size=(h_to, w_to), mode="bilinear", align_corners=False,
                          antialias=True).clamp_(0.0, 1.0).to(x.dtype)
    return x.reshape(*lead, c_to, h_to, w_to)


class FitInput:
    """Batch transform: :func:`fit_images` on support and query images, then ``then``
    (e.g. the evaluation :class:`~fewshot_sparse.data.augment.Normalize`)."""

    def __init__(self, shape: Sequence[int], then=None):
        self.shape = tuple(int(v) for v in shape)
        self.then = then

    def __call__(self, x):
        if isinstance(x, EpisodeBatch):
            x = replace(x, support_images=fit_images(x.support_images, self.shape),
                        query_images=fit_images(x.query_images, self.shape))
        else:
            x = fit_images(x, self.shape)
        return x if self.then is None else self.then(x)

    def __repr__(self) -> str:
        return f"FitInput({shape_text(self.shape)}, then={self.then!r})"


def input_transform(data_shape: Sequence[int], model_shape: Optional[Sequence[int]],
                    normalize, where: str = "the data"):
    """``normalize`` alone when the data already has the model's ``(C, H, W)`` (or the
    model's is unknown), else :class:`FitInput` before it. A shape that cannot be
    converted (not an image, or 2 channels) raises DataError naming both shapes."""
    data_shape = tuple(int(v) for v in data_shape)
    if model_shape is None or tuple(model_shape) == data_shape:
        return normalize
    model_shape = tuple(int(v) for v in model_shape)
    if len(model_shape) != 3 or len(data_shape) != 3 or {data_shape[0], model_shape[0]} - {1, 3}:
        raise DataError(f"{where} holds {data_shape} inputs but the model takes "
                        f"{model_shape}; prepare the data at the model's input shape")
    return FitInput(model_shape, normalize)
