"""Warm starts through the group-Lasso SVM head: ``head(..., beta0=out.beta)`` reaches the
same solution as a cold solve, a start at the solution costs no iteration, and a warm
start of the wrong shape is refused with one line naming the expected shape."""

import pytest
import torch

from fewshot_sparse.heads import build_head


def relu_episodes(b=4, way=4, shot=3, n_query=6, d=40, seed=0):
    """ReLU features max(N(0,1), 0): the non-negative, ill-conditioned kind backbones give."""
    g = torch.Generator().manual_seed(seed)
    s = way * shot
    support = torch.randn(b, s, d, generator=g, dtype=torch.float64).clamp_min(0)
    query = torch.randn(b, n_query, d, generator=g, dtype=torch.float64).clamp_min(0)
    labels = torch.stack([torch.randperm(s, generator=g) % way for _ in range(b)])
    return query, support, labels, way


def head(lambda1, **kw):
    return build_head("group_lasso_svm", lambda1=lambda1, tol=1e-10, max_iter=300, **kw).double()


@pytest.mark.parametrize("smoothing", [0.0, 1.0])
def test_warm_start_reaches_the_cold_solution(smoothing):
    query, support, labels, way = relu_episodes()
    big = head(2.0, smoothing=smoothing)(query, support, labels, way)
    cold = head(1.0, smoothing=smoothing)(query, support, labels, way)
    warm = head(1.0, smoothing=smoothing)(query, support, labels, way, beta0=big.beta)
    assert cold.info.all_converged and warm.info.all_converged
    # the primal solution is unique (lambda2 > 0); the dual need not be when s = 0
    torch.testing.assert_close(warm.weights, cold.weights, rtol=0, atol=1e-6)
    torch.testing.assert_close(warm.logits, cold.logits, rtol=0, atol=1e-6)
    assert torch.equal(warm.active, cold.active)
    assert 0 < int(cold.active.sum()) < cold.active.numel()  # a sparse, non-trivial case
    assert not torch.equal(big.beta, cold.beta)  # the start was not already the answer


def test_warm_start_at_the_solution_takes_no_iteration():
    query, support, labels, way = relu_episodes()
    h = head(1.0)
    cold = h(query, support, labels, way)
    assert bool((cold.info.iterations > 0).all())
    again = h(query, support, labels, way, beta0=cold.beta)
    assert again.info.iterations.tolist() == [0] * support.shape[0]
    torch.testing.assert_close(again.weights, cold.weights, rtol=0, atol=1e-9)


def test_beta_is_the_detached_dual_solution():
    query, support, labels, way = relu_episodes()
    support.requires_grad_()
    out = head(1.0)(query, support, labels, way)
    assert out.beta.shape == (*labels.shape, way) and not out.beta.requires_grad
    torch.testing.assert_close(out.beta.sum(-1), torch.ones(labels.shape, dtype=torch.float64))
    assert bool((out.beta >= 0).all())
    for name, kw in (("ridge", {}), ("protonet", {})):
        assert build_head(name, **kw)(query, support, labels, way).beta is None


def test_gradients_do_not_depend_on_the_start():
    query, support, labels, way = relu_episodes(seed=1)
    start = head(2.0)(query, support, labels, way).beta
    grads = []
    for beta0 in (None, start):
        s = support.clone().requires_grad_()
        out = head(1.0)(query, s, labels, way, beta0=beta0)
        (out.logits ** 2).sum().backward()
        grads.append(s.grad)
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-6)


def test_bad_warm_start_is_one_clear_line():
    query, support, labels, way = relu_episodes(b=3, way=4, shot=2)
    h = head(1.0)
    with pytest.raises(ValueError, match=r"^beta0 must be \[B, S, n_way\] = \[3, 8, 4\] .*"
                                         r"got shape \(3, 8, 5\)$"):
        h(query, support, labels, way, beta0=torch.full((3, 8, 5), 0.2))
    with pytest.raises(ValueError, match=r"beta0 must be .* got ndarray"):
        h(query, support, labels, way, beta0=torch.full((3, 8, 4), 0.25).numpy())
    bad = torch.full((3, 8, 4), 0.25)
    bad[1, 2, 3] = float("nan")
    with pytest.raises(ValueError, match="beta0 .* NaN or inf"):
        h(query, support, labels, way, beta0=bad)
