"""lambda_max: exact with smoothing (W* = 0 just above it, W* != 0 just below), a
sufficient value without (W* = 0 at it)."""

import pytest
import torch

from fewshot_sparse.apps.lambda_max import lambda_max
from fewshot_sparse.heads import build_head


def problem(seed, b=3, n=3, k=2, d=6):
    g = torch.Generator().manual_seed(seed)
    support = torch.randn(b, n * k, d, generator=g, dtype=torch.float64).relu() + 0.1
    labels = torch.arange(n).repeat_interleave(k).repeat(b, 1)
    return support, labels, n


def active(support, labels, n, lam, smoothing):
    head = build_head("group_lasso_svm", lambda1=1.0, smoothing=smoothing, tol=1e-10,
                      max_iter=50000)
    head.lambda1.assign(lam)
    out = head(support[:, :1], support, labels, n)
    assert bool(out.info.converged.all())
    return out.active.sum(-1)


@pytest.mark.parametrize("smoothing", [0.5, 2.0])
def test_exact_with_smoothing(smoothing):
    support, labels, n = problem(0)
    lmax = lambda_max(support, labels, n, 1.0, smoothing)
    assert (active(support, labels, n, lmax * 1.001, smoothing) == 0).all()
    assert (active(support, labels, n, lmax * 0.98, smoothing) > 0).all()


def test_sufficient_without_smoothing():
    support, labels, n = problem(1)
    lmax = lambda_max(support, labels, n, 1.0, 0.0)
    assert (active(support, labels, n, lmax * 1.001, 0.0) == 0).all()
    assert (active(support, labels, n, lmax * 0.3, 0.0) > 0).all()


def test_per_task_lambda_assignment_is_for_fixed_lambdas_only():
    head = build_head("group_lasso_svm", learn_lambdas=True)
    with pytest.raises(ValueError, match="lambda1 is learnable"):
        head.lambda1.assign(torch.tensor([0.1, 0.2]))
    fixed = build_head("group_lasso_svm")
    with pytest.raises(ValueError, match="must be >= 0"):
        fixed.lambda1.assign(torch.tensor([0.1, -1.0]))
    fixed.lambda1.assign(torch.tensor([0.1, 0.2]))
    assert "2 per-task values" in repr(fixed)
