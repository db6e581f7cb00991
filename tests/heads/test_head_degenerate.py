"""Degenerate episodes, one rule for every head: n_way = 1 is refused; all-zero or tiny
features give finite answers (W = 0 and uniform logits for zero features); features so
large that the solve would overflow are refused with a clear error."""

import warnings

import pytest
import torch

from fewshot_sparse.heads import HEADS, build_head


@pytest.mark.parametrize("name", sorted(HEADS))
def test_one_way_is_refused_by_every_head(name):
    g = torch.Generator().manual_seed(0)
    support, query = torch.randn(1, 3, 4, generator=g), torch.randn(1, 2, 4, generator=g)
    labels = torch.zeros(1, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="n_way must be an int >= 2"):
        build_head(name)(query, support, labels, 1)


def episode(scale, dtype=torch.float32, zero_query=False):
    g = torch.Generator().manual_seed(1)
    support = torch.randn(2, 6, 5, generator=g, dtype=torch.float64) * scale
    query = torch.randn(2, 4, 5, generator=g, dtype=torch.float64) * (0 if zero_query else 1)
    labels = torch.tensor([[0, 0, 1, 1, 2, 2]] * 2)
    return query.to(dtype), support.to(dtype), labels


@pytest.mark.parametrize("name", sorted(HEADS))
@pytest.mark.parametrize("scale", [0.0, 1e-21])
def test_zero_and_tiny_support_features_give_finite_answers(name, scale):
    query, support, labels = episode(scale)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = build_head(name)(query, support, labels, 3)
    assert bool(torch.isfinite(out.logits).all()) and bool(torch.isfinite(out.weights).all())
    if scale == 0.0 and name != "protonet":  # no information: W = 0, uniform logits
        assert bool((out.weights == 0).all())
        assert bool((out.logits == out.logits[..., :1]).all())


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # 50 iterations: not converged
@pytest.mark.parametrize("name", sorted(HEADS))
@pytest.mark.parametrize("dtype, scale", [(torch.float32, 1e20), (torch.float64, 1e160)])
def test_features_too_large_for_the_solve_are_refused(name, dtype, scale):
    query, support, labels = episode(scale, dtype)
    with pytest.raises(ValueError, match="support features too large for the head's"):
        build_head(name)(query, support, labels, 3)
    # Large but representable features still run (ProtoNet gave inf at 1e20 before).
    query, support, labels = episode(1e6, dtype)
    out = build_head(name, **({"max_iter": 50} if "svm" in name else {}))(query, support,
                                                                            labels, 3)
    assert bool(torch.isfinite(out.logits).all())
