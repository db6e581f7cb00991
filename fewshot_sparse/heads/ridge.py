"""R2D2 head (Bertinetto et al. 2019): closed-form ridge regression onto one-hot labels."""

from __future__ import annotations

from torch import Tensor, nn

from fewshot_sparse.heads.common import HyperParameter, active_rows, one_hot, outside_autocast, solve_dtype
from fewshot_sparse.heads.output import HeadOutput
from fewshot_sparse.heads.validation import check_head_inputs
from fewshot_sparse.solvers.ridge import ridge_weights


class RidgeHead(nn.Module):
    """``W = X^T (X X^T + lam I)^-1 Y`` per task (solvers/ridge.py), logits
    ``scale * query @ W + bias`` with R2D2's optional learnable scale and bias.

    lam > 0 (default 50, MetaOptNet's R2D2 setting); ``learn_lambda`` learns it in
    log-space. Features are solved in float32, or float64 when given float64.
    """

    def __init__(
        self,
        lam: float = 50.0,
        learn_lambda: bool = False,
        learn_scale: bool = False,
        init_scale: float = 1.0,
        learn_bias: bool = False,
        init_bias: float = 0.0,
    ):
        super().__init__()
        if not lam > 0:
            raise ValueError(f"lam must be > 0 for the ridge head, got {lam!r}")
        self.lam = HyperParameter("lam", lam, learnable=learn_lambda, log_space=True)
        self.scale = HyperParameter("scale", init_scale, learnable=learn_scale)
        self.bias = HyperParameter("bias", init_bias, learnable=learn_bias)

    @outside_autocast
    def forward(self, query: Tensor, support: Tensor, support_labels: Tensor, n_way: int) -> HeadOutput:
        check_head_inputs(query, support, support_labels, n_way)
        dtype, device = solve_dtype(support.dtype), support.device
        s, q = support.to(dtype), query.to(dtype)
        weights = ridge_weights(s, one_hot(support_labels, n_way, dtype), self.lam(dtype, device))
        logits = self.scale(dtype, device) * (q @ weights) + self.bias(dtype, device)
        return HeadOutput(logits=logits, weights=weights, active=active_rows(weights), info=None)
