"""Few-shot heads: stateless modules with MetaOptNet's call contract

    head(query [B, Q, D], support [B, S, D], support_labels [B, S], n_way) -> HeadOutput

``HEADS`` is the registry (an explicit dict); ``build_head`` builds one from a config.
"""

from __future__ import annotations

import inspect
from typing import Dict, Type

from torch import nn

from fewshot_sparse.errors import ConfigError
from fewshot_sparse.heads.crammer_singer import CrammerSingerSVMHead
from fewshot_sparse.heads.group_lasso_svm import ConvergenceWarning, GroupLassoSVMHead
from fewshot_sparse.heads.output import HeadOutput
from fewshot_sparse.heads.protonet import ProtoNetHead
from fewshot_sparse.heads.ridge import RidgeHead

HEADS: Dict[str, Type[nn.Module]] = {
    "group_lasso_svm": GroupLassoSVMHead,
    "svm_cs": CrammerSingerSVMHead,
    "ridge": RidgeHead,
    "protonet": ProtoNetHead,
}


def build_head(name: str, **kwargs) -> nn.Module:
    """``HEADS[name](**kwargs)``; a ``ConfigError`` names an unknown head or keyword.
    Bad values (e.g. a negative lambda) raise the head's own ``ValueError``."""
    if name not in HEADS:
        raise ConfigError(f"unknown head {name!r}; known heads: {', '.join(sorted(HEADS))}")
    cls = HEADS[name]
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ConfigError(
            f"head {name!r} has no option(s) {', '.join(unknown)}; "
            f"its options are: {', '.join(accepted)}"
        )
    return cls(**kwargs)


__all__ = [
    "HEADS",
    "build_head",
    "HeadOutput",
    "ConvergenceWarning",
    "GroupLassoSVMHead",
    "CrammerSingerSVMHead",
    "RidgeHead",
    "ProtoNetHead",
]
