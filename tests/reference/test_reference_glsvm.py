"""The group-Lasso SVM head against the cvxpylayers reference (float64, CPU).

Each case solves 2 tasks of one shape with both; the head runs at a tight tolerance so
that the comparison measures the head's accuracy, not its stopping rule.
"""

import numpy as np
import pytest
import torch

from fewshot_sparse.heads import GroupLassoSVMHead
from fewshot_sparse.reference import GroupLassoSVMReference
from fewshot_sparse.reference.group_lasso_svm import cached_layer
from fewshot_sparse.solvers.group_lasso_dual import primal_objective

pytestmark = pytest.mark.reference

HEAD_TOL = 1e-9

# (S per class, D, W, lambda1 as a fraction of the all-off threshold, lambda2, seed)
CASES = [
    (1, 8, 2, 0.0, 1.0, 0),
    (3, 12, 3, 0.0, 10.0, 1),
    (5, 40, 5, 0.0, 1.0, 2),
    (2, 20, 4, 0.05, 1.0, 3),
    (4, 30, 5, 0.2, 1.0, 4),
    (5, 10, 5, 0.3, 0.5, 5),
    (8, 40, 3, 0.4, 10.0, 6),
    (3, 25, 4, 0.7, 2.0, 7),  # one task all off, one sparse
    (4, 20, 3, 0.7, 1.0, 9),
    (2, 16, 2, 1.01, 1.0, 8),  # every feature off
]


def numpy_primal(X, Y, W, lambda1, lambda2):
    """P(W) for one task, written independently of the package."""
    Z = X @ W
    true = (Z * Y).sum(axis=1, keepdims=True)
    hinge = np.max(1.0 - Y + Z - true, axis=1).sum()
    return hinge + lambda1 * np.linalg.norm(W, axis=1).sum() + 0.5 * lambda2 * (W**2).sum()


def all_off_threshold(X, Y):
    """A lambda1 above which W = 0 (per task, then the batch max): W = 0 is optimal when some
    dual point beta (rows in the simplex, beta_{i y_i} = 0) has max_j ||X_j^T (Y - beta)|| <=
    lambda1; beta spread evenly over the wrong classes is one such point."""
    beta = (1.0 - Y) / (Y.shape[-1] - 1)
    V = np.swapaxes(X, 1, 2) @ (Y - beta)
    return float(np.linalg.norm(V, axis=-1).max())


def make_case(shot, d, w, frac, lambda2, seed, n_tasks=2, n_query=6):
    g = torch.Generator().manual_seed(seed)
    s = shot * w
    support = torch.randn(n_tasks, s, d, generator=g, dtype=torch.float64)
    query = torch.randn(n_tasks, n_query, d, generator=g, dtype=torch.float64)
    labels = torch.stack([torch.randperm(s, generator=g) % w for _ in range(n_tasks)])
    Y = torch.nn.functional.one_hot(labels, w).double()
    lambda1 = frac * all_off_threshold(support.numpy(), Y.numpy())
    return query, support, labels, lambda1, lambda2


def rel_err(a, b, floor=1e-2):
    """||a - b|| / ||b||, with ||b|| floored: the gradients here are O(1), and where the
    exact gradient is 0 (all features off) the interior-point reference returns ~1e-7."""
    return float((a - b).norm() / max(float(b.norm()), floor))


def run_both(case):
    query, support, labels, lambda1, lambda2 = make_case(*case)
    w = case[2]
    g = torch.Generator().manual_seed(100 + case[-1])
    probe = torch.randn(query.shape[0], query.shape[1], w, generator=g, dtype=torch.float64)

    q_h, s_h = query.clone().requires_grad_(), support.clone().requires_grad_()
    head = GroupLassoSVMHead(
        lambda1=lambda1, lambda2=lambda2, tol=HEAD_TOL, max_iter=200_000, learn_lambdas=True
    ).double()
    out_h = head(q_h, s_h, labels, w)
    (out_h.logits * probe).sum().backward()

    q_r, s_r = query.clone().requires_grad_(), support.clone().requires_grad_()
    l1_r = torch.tensor(lambda1, dtype=torch.float64, requires_grad=True)
    l2_r = torch.tensor(lambda2, dtype=torch.float64, requires_grad=True)
    out_r = GroupLassoSVMReference(l1_r, l2_r)(q_r, s_r, labels, w)
    (out_r.logits * probe).sum().backward()
    return dict(
        support=support, labels=labels, lambda1=lambda1, lambda2=lambda2, head=head,
        out_h=out_h, out_r=out_r, q_h=q_h, s_h=s_h, q_r=q_r, s_r=s_r, l1_r=l1_r, l2_r=l2_r,
    )


@pytest.fixture(scope="module", params=CASES, ids=lambda c: "S{}xW{}-D{}-l1f{}-l2{}".format(
    c[0] * c[2], c[2], c[1], c[3], c[4]))
def solved(request):
    return run_both(request.param)


def test_head_converged(solved):
    info = solved["out_h"].info
    assert bool((info.gap <= HEAD_TOL).all()), info.summary()
    assert info.all_converged


def test_primal_objective_matches(solved):
    X = solved["support"]
    W_h = solved["out_h"].weights.detach()
    W_r = solved["out_r"].weights.detach()
    Y = torch.nn.functional.one_hot(solved["labels"], W_h.shape[-1]).double()
    l1, l2 = solved["lambda1"], solved["lambda2"]
    p_h = primal_objective(X, Y, W_h, l1, l2)
    p_r = primal_objective(X, Y, W_r, l1, l2)
    for b in range(X.shape[0]):
        np_h = numpy_primal(X[b].numpy(), Y[b].numpy(), W_h[b].numpy(), l1, l2)
        np_r = numpy_primal(X[b].numpy(), Y[b].numpy(), W_r[b].numpy(), l1, l2)
        assert float(p_h[b]) == pytest.approx(np_h, rel=1e-12)  # the package's P is right
        assert float(p_r[b]) == pytest.approx(np_r, rel=1e-12)  # also on the reference's W
        assert np_h == pytest.approx(np_r, rel=1e-6, abs=1e-9)  # same optimum value
        assert float(p_h[b]) <= np_r * (1 + 1e-6) + 1e-9


def test_weights_and_logits_match(solved):
    W_h, W_r = solved["out_h"].weights.detach(), solved["out_r"].weights.detach()
    assert torch.allclose(W_h, W_r, atol=1e-4, rtol=0)
    L_h, L_r = solved["out_h"].logits.detach(), solved["out_r"].logits.detach()
    assert torch.allclose(L_h, L_r, atol=1e-4 * max(1.0, float(L_r.abs().max())), rtol=0)
    # the reference's (numerically) zero rows are the head's zero rows, up to round-off
    n_h, n_r = W_h.norm(dim=-1), W_r.norm(dim=-1)
    assert bool((n_h[n_r < 1e-8] < 1e-12).all())
    assert bool(solved["out_h"].active[n_r > 1e-6].all())


def test_feature_gradients_match(solved):
    assert rel_err(solved["s_h"].grad, solved["s_r"].grad) < 1e-4
    assert rel_err(solved["q_h"].grad, solved["q_r"].grad) < 1e-4


def test_lambda_gradients_match(solved):
    head = solved["head"]
    l1, l2 = solved["lambda1"], solved["lambda2"]
    g_r = torch.stack([solved["l1_r"].grad, solved["l2_r"].grad])
    # the head learns log(lambda): d/dlambda = d/dlog(lambda) / lambda
    g2 = head.lambda2.raw.grad / l2
    if l1 > 0:
        g_h = torch.stack([head.lambda1.raw.grad / l1, g2])
        assert rel_err(g_h, g_r) < 1e-4
    else:
        assert not head.lambda1.learnable  # lambda1 = 0 stays fixed
        # the scale of the lambda-sensitivities is set by d/dlambda1 (at lambda1 = 0+)
        assert float((g2 - g_r[1]).abs()) < 1e-4 * max(float(g_r.norm()), 1e-2)


def test_all_off_case_is_all_off():
    case = CASES[-1]
    res = run_both(case)
    assert not res["out_h"].active.any()
    assert torch.count_nonzero(res["out_h"].weights) == 0
    assert torch.count_nonzero(res["s_h"].grad) == 0
    assert torch.count_nonzero(res["q_h"].grad) == 0


def test_layers_are_cached_per_shape():
    assert cached_layer(4, 6, 2) is cached_layer(4, 6, 2)
    assert cached_layer(4, 6, 2) is not cached_layer(4, 7, 2)


def test_reference_rejects_bad_input():
    ref = GroupLassoSVMReference(0.1, 1.0)
    q, s = torch.randn(1, 3, 4, dtype=torch.float64), torch.randn(1, 4, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="support_labels"):
        ref(q, s, torch.tensor([[0, 1, 2, 3]]), 2)
    with pytest.raises(ValueError, match="lambda1"):
        GroupLassoSVMReference(-1.0, 1.0)
