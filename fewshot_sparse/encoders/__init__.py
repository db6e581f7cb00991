"""Feature extractors: ``build_encoder(name, **kwargs)`` from the ENCODERS registry.

Every encoder maps a flat batch [M, *input] to features [M, D].
"""

from __future__ import annotations

from torch import nn

from fewshot_sparse.encoders.conv4 import Conv4
from fewshot_sparse.encoders.mlp import MLPEncoder
from fewshot_sparse.encoders.resnet12 import ResNet12MetaOptNet
from fewshot_sparse.errors import ConfigError

ENCODERS = {
    "resnet12_metaoptnet": ResNet12MetaOptNet,
    "conv4": Conv4,
    "mlp": MLPEncoder,
}


def build_encoder(name: str, **kwargs) -> nn.Module:
    """Instantiate the encoder registered as ``name`` with ``kwargs``."""
    try:
        cls = ENCODERS[name]
    except KeyError:
        raise ConfigError(
            f"unknown encoder {name!r}; choose one of {sorted(ENCODERS)}") from None
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"encoder {name!r}: {e}") from None


__all__ = ["ENCODERS", "build_encoder", "Conv4", "MLPEncoder", "ResNet12MetaOptNet"]
