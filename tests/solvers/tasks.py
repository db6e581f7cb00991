"""Seeded tasks shared by the solver tests. No cvxpy here: the `gpu` tests import only
this, so that they run on a machine with torch alone (benchmarks/gpu_check.sh)."""

import torch


def make_task(seed, S, D, W, batch=1):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(batch, S, D, generator=g)
    y = torch.stack([torch.randperm(S, generator=g) % W for _ in range(batch)])  # every class present
    Y = torch.nn.functional.one_hot(y, W).to(X.dtype)
    return X, Y


def relu_task(seed, S, D, W, batch=1, dtype=torch.float64):
    """make_task's features through a ReLU: non-negative, like a backbone's."""
    X, Y = make_task(seed, S, D, W, batch)
    return X.clamp_min(0.0).to(dtype), Y.to(dtype)


def lambda1_all_off(X, Y):
    """A lambda1 at which W* = 0: the subgradient condition at W = 0 holds with beta spread
    uniformly over the wrong classes (docs/math.md, 4)."""
    W = Y.shape[-1]
    beta = (1.0 - Y) / (W - 1)
    V = X.transpose(1, 2) @ (Y - beta)
    return 1.01 * torch.linalg.vector_norm(V, dim=-1).amax(-1)  # [B]
