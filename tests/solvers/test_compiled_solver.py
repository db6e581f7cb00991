"""The interior-point solver compiled by torch.compile (``compiled=True``: its start and
its iteration) takes the steps of its plain-PyTorch twin, and falls back to it, with a
warning, where compiling fails. Each distinct problem shape compiles once (tens of seconds on a CPU), so these
tests share two shapes."""

import warnings

import pytest
import torch
from torch._dynamo.utils import counters

from fewshot_sparse.implicit.certificate import certified_weights
from fewshot_sparse.implicit.group_lasso_svm_grad import group_lasso_svm_fit
from fewshot_sparse.solvers import compiled as compiled_solver
from fewshot_sparse.solvers import graph_loop
from fewshot_sparse.solvers.group_lasso_dual import dual_weights
from fewshot_sparse.solvers.group_lasso_ipm import InteriorPointSolver, track_best
from fewshot_sparse.solvers.group_lasso_newton import adjoint_solve
from fewshot_sparse.solvers.group_lasso_svm import GroupLassoSVMDual
from tasks import lambda1_all_off, relu_task

# D = 48 is below the narrowest gather width: one compiled graph a shape
SHAPE = (25, 48, 5)


def _solve(X, Y, l1, compiled, beta0=None):
    return InteriorPointSolver(tol=1e-8, sync_free=True, compiled=compiled).run(X, Y, l1, 0.5, beta0=beta0)


@pytest.fixture
def fresh_compile(monkeypatch):
    """A process state where compiling has not failed yet; no cached loop."""
    monkeypatch.setattr(compiled_solver, "_failed", [])
    graph_loop.clear_graph_cache()
    yield
    graph_loop.clear_graph_cache()


@pytest.mark.parametrize("lambda1", ["mixed", "zero"])  # the group pairs' model; K = X X^T
def test_the_compiled_solver_takes_the_plain_steps(lambda1, fresh_compile):
    graphs = counters["stats"]["unique_graphs"]
    for seed, warm in ((51, False), (52, False), (53, True)):  # the later solves reuse the compiled graphs
        X, Y = relu_task(seed, *SHAPE, batch=4)
        l1 = lambda1_all_off(X, Y) * torch.tensor([0.0, 0.05, 0.3, 0.8], dtype=X.dtype)
        l1 = torch.zeros_like(l1) if lambda1 == "zero" else l1
        g = torch.Generator().manual_seed(seed)
        beta0 = torch.softmax(torch.randn(Y.shape, generator=g, dtype=X.dtype), -1) if warm else None
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message="torch.compile")
            (b_p, i_p), (b_c, i_c) = (_solve(X, Y, l1, c, beta0) for c in (False, True))
        assert i_p.converged.all() and torch.equal(i_c.iterations, i_p.iterations)
        # the same arithmetic in another order (fused loops): the weights to round-off
        torch.testing.assert_close(dual_weights(X, Y, b_c, l1, 0.5), dual_weights(X, Y, b_p, l1, 0.5), atol=1e-10, rtol=0)
    assert counters["stats"]["unique_graphs"] > graphs, "nothing was compiled"


def test_the_compiled_check_keeps_the_plain_best_points_and_flags(fresh_compile):
    """The check between iterations, with the stall test on (float32 features): mixed
    tasks (done, better, worse, stalled, converged), compiled against plain, exactly."""
    g = torch.Generator().manual_seed(57)
    B, S, W = 6, 10, 3
    st = {k: torch.rand(B, generator=g, dtype=torch.float64) for k in ("p", "d", "gap")}
    st["beta"] = torch.rand(B, S, W, generator=g, dtype=torch.float64)
    st["gap"] = torch.tensor([1e-3, 2e-5, 5e-4, 5e-6, 3e-4, 1e-2], dtype=torch.float64)
    st["count"] = torch.tensor(17)
    done = torch.tensor([True, False, False, False, False, False])
    out = tuple(torch.rand(B, generator=g, dtype=torch.float64) for _ in range(3))
    out = out[:2] + (torch.tensor([1e-2, 1e-4, 1e-4, 2e-4, 2e-4, 1e-3], dtype=torch.float64),)
    out_beta = torch.rand(B, S, W, generator=g, dtype=torch.float64)
    oldest = torch.tensor([1e-2, 1e-4, 9e-4, 1e-4, 3e-4, 1e-3], dtype=torch.float64)
    near = torch.full((B,), 1e-3, dtype=torch.float64)
    args = (st, done, out_beta, out, oldest, near, 1e-6, 1e-5, True)
    plain = track_best(*args)
    fused = compiled_solver.compiled_call(track_best, *args)
    # task 0 done, 1 and 3 better, 3 to polish, 4 and 5 stalled (not halved since oldest)
    assert plain[3].tolist() == [False, False, False, True, False, False]
    assert plain[4].tolist() == [True, False, False, False, True, True] and plain[-1].tolist() == [1, 0, 17]
    for got, want in zip(torch.utils._pytree.tree_leaves(fused), torch.utils._pytree.tree_leaves(plain)):
        assert torch.equal(got, want)


@pytest.mark.parametrize("D", [48, 200])  # all groups masked; gathered to a static width
def test_the_compiled_adjoint_solve_gives_the_plain_solution(D, fresh_compile):
    """The implicit gradient's adjoint system at a solution, lambda1 > 0 (some groups on
    their kink's far side, some off), compiled against plain."""
    X, Y = relu_task(58, 25, D, 5, batch=3)
    l1 = lambda1_all_off(X, Y) * torch.tensor([0.05, 0.3, 0.6], dtype=X.dtype)
    beta, info = GroupLassoSVMDual(tol=1e-10).run(X, Y, l1, 0.5)
    assert info.converged.all()
    rhs = torch.randn(Y.shape, generator=torch.Generator().manual_seed(58), dtype=X.dtype)
    l1b, l2b = l1.reshape(-1, 1, 1), torch.full((3, 1, 1), 0.5, dtype=X.dtype)
    plain, fused = (adjoint_solve(X, Y, beta, l1b, l2b, 0.0, rhs, compiled=c) for c in (False, True))
    assert plain.abs().max() > 0
    torch.testing.assert_close(fused, plain, atol=1e-9 * float(plain.abs().max()), rtol=0)


@pytest.mark.parametrize("fractions,backward", [
    ([0.0, 0.05, 0.3, 0.8], ["weights_pullback", "face_and_curvature", "face_solve", "parameter_pullback"]),
    ([0.0] * 4, ["weights_pullback", "kronecker_adjoint", "parameter_pullback"]),
])
def test_a_compiled_fit_gives_the_plain_weights_and_gradients(fractions, backward, fresh_compile, monkeypatch):
    """group_lasso_svm_fit with the compiled solver: the implicit backward takes the
    compiled pullbacks and adjoint solve too (class blocks where lambda1 = 0 everywhere)."""
    called = []
    record = compiled_solver._call_compiled
    monkeypatch.setattr(compiled_solver, "_call_compiled", lambda fn, *a: called.append(fn.__name__) or record(fn, *a))
    X, Y = relu_task(59, *SHAPE, batch=4)
    l1 = lambda1_all_off(X, Y) * torch.tensor(fractions, dtype=X.dtype)
    query = torch.randn(4, 30, SHAPE[1], generator=torch.Generator().manual_seed(59), dtype=X.dtype)
    results = []
    for c in (False, True):
        x = X.clone().requires_grad_()
        W, _, info = group_lasso_svm_fit(x, Y, l1, 0.5, GroupLassoSVMDual(tol=1e-9, sync_free=True, compiled=c))
        called.clear()
        torch.tanh(query @ W).sum().backward()
        assert info.converged.all()
        results.append((W.detach(), x.grad))
        assert called == (backward if c else [])
    for got, want in zip(results[1], results[0]):
        torch.testing.assert_close(got, want, atol=1e-8 * float(want.abs().max()), rtol=0)


def test_the_compiled_certificate_gives_the_plain_weights_and_report(fresh_compile):
    """The float32 fit's tail (implicit/certificate.py) compiled, on tasks far from, near
    and at float32's rounding floor, from a solve cut short: the same W formed in float64,
    the same report (tasks re-certified in float64 and not) and the same tasks to refit."""
    X, Y = relu_task(61, 25, 600, 5, batch=4, dtype=torch.float32)
    X = X * torch.tensor([1.0, 1.0, 5.0, 30.0], dtype=X.dtype).reshape(4, 1, 1)  # larger ||x||^2: a higher floor
    l1, l2, tol = 0.2 * lambda1_all_off(X, Y), torch.tensor(10.0, dtype=X.dtype), 1e-4
    beta, info = GroupLassoSVMDual(tol=tol, max_iter=12).run(X, Y, l1, l2)
    report = (info.primal, info.dual, info.gap, info.converged)
    plain = certified_weights(X, Y, beta, l1, l2, 0.0, tol, report)
    fused = compiled_solver.compiled_call(certified_weights, X, Y, beta, l1, l2, 0.0, tol, report)
    recertified = plain[1][2] != info.gap
    assert recertified.any() and not recertified.all() and plain[2].any()  # the premise: each branch taken
    torch.testing.assert_close(fused[0], plain[0], atol=1e-12 * float(plain[0].abs().max()), rtol=0)
    for got, want in zip(fused[1], plain[1]):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-10)
    assert torch.equal(fused[2], plain[2])


def _failing_backend(gm, example_inputs):
    raise RuntimeError("no compiler here")


def test_a_failed_compile_warns_once_and_runs_the_plain_iteration(monkeypatch, fresh_compile):
    monkeypatch.setattr(compiled_solver, "BACKEND", _failing_backend)
    X, Y = relu_task(53, *SHAPE, batch=2)
    l1 = 0.3 * lambda1_all_off(X, Y)
    with pytest.warns(UserWarning, match="torch.compile of the solver failed.*no compiler here") as record:
        b_c, i_c = _solve(X, Y, l1, True)
        _solve(X, Y, l1, True)  # no second try, no second warning
    assert sum("torch.compile" in str(w.message) for w in record) == 1
    b_p, i_p = _solve(X, Y, l1, False)
    assert torch.equal(i_c.iterations, i_p.iterations)
    torch.testing.assert_close(b_c, b_p, atol=0, rtol=0)


def test_compiled_needs_the_sync_free_mode():
    X, Y = relu_task(54, 10, 20, 3, batch=1)
    with pytest.raises(ValueError, match="sync-free"):
        InteriorPointSolver(sync_free=False, compiled=True).run(X, Y, 0.1, 1.0)


@pytest.mark.gpu
def test_the_compiled_captured_solver_takes_the_plain_cuda_steps(fresh_compile):
    """float32 features, lambda1 > 0: the GPU target's regime (one configuration: each
    compiles for a minute or so)."""
    dev = torch.device("cuda")
    for seed in (55, 56):  # the second solve replays the first one's graph
        X, Y = relu_task(seed, *SHAPE, batch=4, dtype=torch.float32)
        l1 = 0.3 * lambda1_all_off(X, Y)
        X, Y, l1 = X.to(dev), Y.to(dev), l1.to(dev)
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message=".*(CUDA graph|torch.compile)")
            (b_p, i_p), (b_c, i_c) = (InteriorPointSolver(tol=1e-5, cuda_graph=c, compiled=c).run(X, Y, l1, 1.0)
                                      for c in (False, True))
        assert next(iter(graph_loop._cache.values()))._graph is not None, "the iteration was not captured"
        assert i_c.converged.all() and i_p.converged.all()
        # float32 products in another order may take a step more or less: both primal
        # values lie within tol of the optimum
        scale = torch.maximum(i_p.primal.abs(), torch.ones_like(i_p.primal))
        assert ((i_c.primal - i_p.primal).abs() <= 2e-5 * scale).all()


@pytest.mark.gpu
def test_a_compiled_cuda_fit_gives_the_plain_weights_and_gradients(fresh_compile):
    """The whole head on CUDA in float32, compiled (the certificate, the pullbacks and
    the adjoint solve through Triton) against plain: both solutions within tol, so W and
    the gradients agree to the accuracy the tolerance allows."""
    dev = torch.device("cuda")
    X, Y = relu_task(57, *SHAPE, batch=4, dtype=torch.float32)
    l1 = lambda1_all_off(X, Y) * torch.tensor([0.0, 0.05, 0.3, 0.8], dtype=X.dtype)
    query = torch.rand(4, 30, SHAPE[1], generator=torch.Generator().manual_seed(57), dtype=X.dtype).to(dev)
    X, Y, l1 = X.to(dev), Y.to(dev), l1.to(dev)
    results = []
    for c in (False, True):
        x, lam = X.clone().requires_grad_(), l1.clone().requires_grad_()
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message=".*torch.compile")
            W, _, info = group_lasso_svm_fit(x, Y, lam, 0.5, GroupLassoSVMDual(tol=1e-6, compiled=c))
            torch.tanh(query @ W).sum().backward()
        assert info.converged.all(), info.summary()
        results.append((W.detach(), x.grad, lam.grad))
    for got, want in zip(results[1], results[0]):
        assert float((got - want).abs().max()) <= 1e-2 * float(want.abs().max())
