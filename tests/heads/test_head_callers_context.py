"""A head inside its caller's context: a mixed-precision (autocast) region, a model
compiled by torch.compile, a default device."""

import pytest
import torch

from fewshot_sparse.heads import HEADS
from fewshot_sparse.implicit.group_lasso_svm_grad import group_lasso_svm_fit
from fewshot_sparse.solvers import ipm_systems
from fewshot_sparse.solvers.group_lasso_svm import GroupLassoSVMDual

from test_heads_contract import episode, make


@pytest.mark.parametrize("name", sorted(HEADS))
def test_a_callers_autocast_leaves_the_head_in_its_solve_dtype(name):
    """A mixed-precision loop around a head (bfloat16 autocast) changes nothing in it: the
    same float32 output as outside autocast, bit for bit. Before, its products ran in
    bfloat16, and at the default tol (1e-4: float32 inside) the SVM heads stopped
    unconverged on these ReLU features, at a gap of 1e-2."""
    query, support, labels, way = episode(b=2, way=5, shot=5, n_query=15, d=64, dtype=torch.float32)
    query, support = query.relu(), support.relu()
    solver_head = name in ("group_lasso_svm", "svm_cs")
    head = make(name, dtype=torch.float32, **({"tol": 1e-4} if solver_head else {}))
    s_plain, s_mixed = support.clone().requires_grad_(), support.clone().requires_grad_()
    plain = head(query, s_plain, labels, way)
    plain.logits.square().sum().backward()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = head(query, s_mixed, labels, way)
    mixed.logits.square().sum().backward()  # outside the region, as AMP advises
    assert mixed.logits.dtype == mixed.weights.dtype == torch.float32
    assert torch.equal(mixed.logits, plain.logits) and torch.equal(mixed.weights, plain.weights)
    assert torch.equal(s_mixed.grad, s_plain.grad)
    if solver_head:
        assert bool(mixed.info.converged.all())


def test_the_solver_and_the_implicit_fit_ignore_a_callers_autocast():
    """Called directly (not through a head), the solver and the differentiable fit run in
    their own dtypes inside a bfloat16 autocast region: the same beta, W and gradient,
    the implicit gradient's backward called inside the region too."""
    _, support, labels, way = episode(b=2, way=5, shot=5, d=64, dtype=torch.float32)
    X, Y = support.relu(), torch.nn.functional.one_hot(labels, way).float()
    solver = GroupLassoSVMDual(tol=1e-4)
    results = []
    for region in (torch.autocast("cpu", dtype=torch.bfloat16, enabled=False), torch.autocast("cpu", dtype=torch.bfloat16)):
        Xg = X.clone().requires_grad_()
        with region:
            beta, _ = solver.run(X, Y, 0.5, 1.0)
            W, _, info = group_lasso_svm_fit(Xg, Y, 0.5, 1.0, solver)
            W.square().sum().backward()
        results.append((beta, W, Xg.grad, info.converged))
    (b0, W0, g0, _), (b1, W1, g1, conv) = results
    assert torch.equal(b0, b1) and torch.equal(W0, W1) and torch.equal(g0, g1) and bool(conv.all())


def test_a_compiled_model_calls_the_fit_as_one_opaque_step():
    """torch.compile of a function around the group-Lasso head: the fit is one call that
    dynamo skips (its loop, traced, made dozens of graphs and a minute of compiling), the
    rest compiles around it (the input check's host read breaks it too), and the output
    is the eager one."""
    query, support, labels, way = episode(b=2, way=5, shot=5, n_query=15, d=64, dtype=torch.float32)
    head = make("group_lasso_svm", dtype=torch.float32, tol=1e-4)

    def logits(q, s):
        return head(q.relu(), s.relu(), labels, way).logits

    explained = torch._dynamo.explain(logits)(query, support)
    assert explained.graph_count <= 8
    assert any("disable" in str(r.reason) for r in explained.break_reasons)
    torch._dynamo.reset()
    assert torch.equal(torch.compile(logits)(query, support), logits(query, support))


@pytest.mark.parametrize("name,options", [
    ("group_lasso_svm", {}), ("group_lasso_svm", {"method": "fista"}), ("svm_cs", {}), ("ridge", {}), ("protonet", {}),
])
def test_a_callers_default_device_is_never_used(name, options):
    """Every tensor a head makes follows its inputs' device: with the default device set
    to "meta" (no data) a CPU call still runs, forward and backward (the solver's sum-zero
    basis was made on the default device, and failed there)."""
    query, support, labels, way = episode(b=2, way=5, shot=5, n_query=15, d=64, dtype=torch.float32)
    head = make(name, dtype=torch.float32, **options)
    support = support.relu().requires_grad_()
    ipm_systems._helmert.cache_clear()  # made anew under the default device below
    torch.set_default_device("meta")
    try:
        out = head(query.relu(), support, labels, way)
        out.logits.square().sum().backward()
    finally:
        torch.set_default_device("cpu")
    assert out.logits.device.type == support.grad.device.type == "cpu"
    assert torch.isfinite(support.grad).all()
