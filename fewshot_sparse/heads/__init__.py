"""Few-shot heads: stateless modules with MetaOptNet's call contract

    head(query [B, Q, D], support [B, S, D], support_labels [B, S], n_way) -> HeadOutput

``HEADS`` is the registry (an explicit dict); ``build_head`` builds one from a config.
"""

from __future__ import annotations

from typing import Dict, Type

from torch import nn

from fewshot_sparse.errors import ConfigError
from fewshot_sparse.heads.crammer_singer import CrammerSingerSVMHead
from fewshot_sparse.heads.group_lasso_svm import ConvergenceWarning, GroupLassoSVMHead
from fewshot_sparse.heads.output import HeadOutput
from fewshot_sparse.heads.protonet import ProtoNetHead
from fewshot_sparse.heads.ridge import RidgeHead
from fewshot_sparse.heads.validation import check_head_inputs, check_head_options, check_nonnegative

HEADS: Dict[str, Type[nn.Module]] = {
    "group_lasso_svm": GroupLassoSVMHead,
    "svm_cs": CrammerSingerSVMHead,
    "ridge": RidgeHead,
    "protonet": ProtoNetHead,
}


def build_head(name: str, **kwargs) -> nn.Module:
    """``HEADS[name](**kwargs)``; a ``ConfigError`` names an unknown head, an unknown
    option or an option's bad value (heads/validation.py: check_head_options)."""
    if name not in HEADS:
        raise ConfigError(f"unknown head {name!r}; known heads: {', '.join(sorted(HEADS))}")
    cls = HEADS[name]
    check_head_options(cls, kwargs, prefix=f"head {name!r} option ")
    try:
        return cls(**kwargs)
    except ValueError as e:
        raise ConfigError(f"head {name!r}: {e}") from None


__all__ = [
    "HEADS",
    "build_head",
    "HeadOutput",
    "ConvergenceWarning",
    "GroupLassoSVMHead",
    "CrammerSingerSVMHead",
    "RidgeHead",
    "ProtoNetHead",
    "check_head_inputs",
    "check_nonnegative",
]
