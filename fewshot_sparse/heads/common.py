"""Small pieces the heads share: the solve dtype and autocast policy, one-hot targets,
scalar hyperparameters (:class:`HyperParameter`; ``solvers`` uses the name ``Scalar`` for
a float-or-tensor type)."""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor, nn

from fewshot_sparse.heads.validation import check_nonnegative
from fewshot_sparse.solvers.autocast import autocast_off


def solve_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; float32, float16 and bfloat16 are solved in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def outside_autocast(forward):
    """A head's ``forward(query, support, ...)`` run under ``autocast_off(support.device)``:
    a head solves in ``solve_dtype`` inside a caller's mixed-precision region too."""

    @functools.wraps(forward)
    def wrapped(self, query: Tensor, support: Tensor, *args, **kwargs):
        with autocast_off(support.device):
            return forward(self, query, support, *args, **kwargs)

    return wrapped


def one_hot(labels: Tensor, n_way: int, dtype: torch.dtype) -> Tensor:
    """[B, S] int labels -> [B, S, n_way] one-hot in ``dtype``."""
    return nn.functional.one_hot(labels.long(), n_way).to(dtype)


def active_rows(weights: Tensor) -> Tensor:
    """[B, D, W] weights -> [B, D] bool: the features whose weight row is non-zero."""
    return weights.detach().abs().amax(dim=-1) > 0


class HyperParameter(nn.Module):
    """A scalar hyperparameter: a fixed buffer, or a learnable parameter.

    ``log_space=True`` (for a regularisation weight) learns ``log(value)`` so the value
    stays positive; a value of 0 can then not be learnt and stays fixed at 0. Calling the
    module returns the value as a 0-d tensor in the requested dtype (autograd flows
    through the cast to the parameter). The value is stored in float64 so that a
    hyperparameter such as 0.7 is exact in float64 solves (``module.double()`` cannot
    recover digits a float32 copy has lost); float32 solves simply cast it down.
    """

    def __init__(self, name: str, value: float, learnable: bool = False, log_space: bool = False):
        super().__init__()
        value = float(value)
        if log_space:
            check_nonnegative(name, value)
        self.name = name
        self.log_space = bool(log_space and learnable and value > 0)
        if learnable and (value > 0 or not log_space):
            raw = math.log(value) if self.log_space else value
            self.raw = nn.Parameter(torch.tensor(raw, dtype=torch.float64))
        else:
            self.register_buffer("raw", torch.tensor(value, dtype=torch.float64))

    @property
    def learnable(self) -> bool:
        return isinstance(self.raw, nn.Parameter)

    def assign(self, value) -> None:
        """Set a fixed hyperparameter: a float, or a [B] tensor giving each task of the
        next calls its own value (the solvers take [] or [B]; apps/sweep.py uses it for
        per-task lambda1 = ratio * lambda_max). A learnable one refuses."""
        if self.learnable:
            raise ValueError(f"{self.name} is learnable; assign() sets fixed values only")
        value = torch.as_tensor(value, dtype=torch.float64).detach()
        if value.dim() > 1 or (value < 0).any():
            raise ValueError(f"{self.name} must be >= 0, a scalar or one value per task, "
                             f"got shape {tuple(value.shape)}")
        self.raw = value.to(self.raw.device)

    def forward(self, dtype: torch.dtype, device: torch.device) -> Tensor:
        v = self.raw.to(dtype=dtype, device=device)
        return v.exp() if self.log_space else v

    def extra_repr(self) -> str:
        if self.raw.dim():
            return f"{self.name}=<{self.raw.numel()} per-task values>, learnable=False"
        value = float(self.raw.detach().exp() if self.log_space else self.raw.detach())
        return f"{self.name}={value:g}, learnable={self.learnable}"
