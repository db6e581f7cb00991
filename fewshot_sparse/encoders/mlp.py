"""MLPEncoder: a fully connected backbone for vector data (e.g. the identifiability benchmark).

Input ``[N, F]``; any extra trailing dimensions are flattened (``[N, C, H, W]`` works too,
with ``in_features = C*H*W``). Output ``[N, out_features]``.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from fewshot_sparse.errors import ConfigError

ACTIVATIONS = {
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.2),
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "silu": nn.SiLU,
}

OUTPUT_NORMS = ("none", "batchnorm", "layernorm")


class MLPEncoder(nn.Module):
    """``Linear -> act -> ... -> Linear`` with an optional parameter-free output norm.

    in_features   size of one flattened input
    hidden        widths of the hidden layers (``()`` gives a linear encoder)
    out_features  feature dimension D handed to the head
    activation    one of ``ACTIVATIONS``
    output_norm   ``"none"``; ``"batchnorm"`` (BatchNorm1d without affine parameters:
                  every feature standardised over the batch of support+query points, so
                  the encoder cannot inflate the feature scale to escape a head's
                  penalty); or ``"layernorm"`` (per point, without affine parameters)
    """

    def __init__(self, in_features: int, hidden: Sequence[int] = (256, 256),
                 out_features: int = 64, activation: str = "leaky_relu",
                 output_norm: str = "none"):
        super().__init__()
        if int(in_features) < 1 or int(out_features) < 1:
            raise ConfigError(f"MLPEncoder: in_features and out_features must be >= 1, "
                              f"got {in_features} and {out_features}")
        if any(int(h) < 1 for h in hidden):
            raise ConfigError(f"MLPEncoder: hidden widths must be >= 1, got {tuple(hidden)}")
        if activation not in ACTIVATIONS:
            raise ConfigError(f"MLPEncoder: unknown activation {activation!r}; "
                              f"choose one of {sorted(ACTIVATIONS)}")
        if output_norm not in OUTPUT_NORMS:
            raise ConfigError(f"MLPEncoder: unknown output_norm {output_norm!r}; "
                              f"choose one of {list(OUTPUT_NORMS)}")
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.hidden = tuple(int(h) for h in hidden)
        self.activation = activation
        self.output_norm = output_norm
        layers: list[nn.Module] = []
        width = self.in_features
        for h in self.hidden:
            layers += [nn.Linear(width, h), ACTIVATIONS[activation]()]
            width = h
        layers.append(nn.Linear(width, self.out_features))
        if output_norm == "batchnorm":
            layers.append(nn.BatchNorm1d(self.out_features, affine=False))
        elif output_norm == "layernorm":
            layers.append(nn.LayerNorm(self.out_features, elementwise_affine=False))
        self.net = nn.Sequential(*layers)

    @property
    def out_dim(self) -> int:
        return self.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2:
            raise ValueError(f"MLPEncoder expects [N, F] (or [N, ...]), got shape {tuple(x.shape)}")
        x = x.flatten(1)
        if x.shape[1] != self.in_features:
            raise ValueError(f"MLPEncoder built for {self.in_features} input features, "
                             f"got {x.shape[1]} (input shape {tuple(x.shape)})")
        return self.net(x)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, hidden={self.hidden}, "
                f"out_features={self.out_features}, output_norm={self.output_norm!r}")
