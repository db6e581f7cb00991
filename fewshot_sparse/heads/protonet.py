"""Prototypical-network head (Snell et al. 2017) under the common head contract."""

from __future__ import annotations

from torch import Tensor, nn

from fewshot_sparse.heads.common import HyperParameter, active_rows, one_hot, outside_autocast, solve_dtype
from fewshot_sparse.heads.output import HeadOutput
from fewshot_sparse.heads.validation import check_head_inputs


class ProtoNetHead(nn.Module):
    """Prototypes are the class means of the support features; a query's logit for class
    c is ``-scale * ||q - p_c||^2``. ``normalize=True`` divides the squared distance by D
    (MetaOptNet's option). ``weights`` are the prototypes as [B, D, W] and ``active``
    marks the features some prototype uses (non-zero entry)."""

    def __init__(self, normalize: bool = False, learn_scale: bool = False, init_scale: float = 1.0):
        super().__init__()
        self.normalize = bool(normalize)
        self.scale = HyperParameter("scale", init_scale, learnable=learn_scale)

    @outside_autocast
    def forward(self, query: Tensor, support: Tensor, support_labels: Tensor, n_way: int) -> HeadOutput:
        check_head_inputs(query, support, support_labels, n_way)
        dtype = solve_dtype(support.dtype)
        q, s = query.to(dtype), support.to(dtype)
        y = one_hot(support_labels, n_way, dtype)  # [B, S, W]
        protos = (y.transpose(1, 2) @ s) / y.sum(dim=1).unsqueeze(-1)  # [B, W, D]
        # ||q - p||^2 = |q|^2 - 2 q.p + |p|^2, without a [B, Q, W, D] intermediate
        sq_dist = (
            (q * q).sum(-1, keepdim=True)
            - 2.0 * q @ protos.transpose(1, 2)
            + (protos * protos).sum(-1).unsqueeze(1)
        )
        if self.normalize:
            sq_dist = sq_dist / q.shape[-1]
        logits = -self.scale(dtype, q.device) * sq_dist
        weights = protos.transpose(1, 2)
        return HeadOutput(logits=logits, weights=weights, active=active_rows(weights), info=None)
