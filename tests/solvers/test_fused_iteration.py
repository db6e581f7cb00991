"""The interior-point iteration compiled by torch.compile (``compiled=True``) takes the
steps of its plain-PyTorch twin, and falls back to it, with a warning, where compiling
fails. Each distinct problem shape compiles once (tens of seconds on a CPU), so these
tests share two shapes."""

import warnings

import pytest
import torch
from torch._dynamo.utils import counters

from fewshot_sparse.solvers import fused_iteration, graph_loop
from fewshot_sparse.solvers.group_lasso_dual import dual_weights
from fewshot_sparse.solvers.group_lasso_ipm import InteriorPointSolver
from tasks import lambda1_all_off, relu_task

# D = 48 is below the narrowest gather width: one compiled graph a shape
SHAPE = (25, 48, 5)


def _solve(X, Y, l1, compiled):
    return InteriorPointSolver(tol=1e-8, sync_free=True, compiled=compiled).run(X, Y, l1, 0.5)


@pytest.fixture
def fresh_compile(monkeypatch):
    """A process state where compiling has not failed yet; no cached loop."""
    monkeypatch.setattr(fused_iteration, "_failed", [])
    graph_loop.clear_graph_cache()
    yield
    graph_loop.clear_graph_cache()


@pytest.mark.parametrize("lambda1", ["mixed", "zero"])  # the group pairs' model; K = X X^T
def test_the_compiled_iteration_takes_the_plain_steps(lambda1, fresh_compile):
    graphs = counters["stats"]["unique_graphs"]
    for seed in (51, 52):  # the second solve reuses the first one's compiled graph
        X, Y = relu_task(seed, *SHAPE, batch=4)
        l1 = lambda1_all_off(X, Y) * torch.tensor([0.0, 0.05, 0.3, 0.8], dtype=X.dtype)
        l1 = torch.zeros_like(l1) if lambda1 == "zero" else l1
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message="torch.compile")
            (b_p, i_p), (b_c, i_c) = (_solve(X, Y, l1, compiled) for compiled in (False, True))
        assert i_p.converged.all() and torch.equal(i_c.iterations, i_p.iterations)
        # the same arithmetic in another order (fused loops): the weights to round-off
        torch.testing.assert_close(dual_weights(X, Y, b_c, l1, 0.5), dual_weights(X, Y, b_p, l1, 0.5), atol=1e-10, rtol=0)
    assert counters["stats"]["unique_graphs"] > graphs, "nothing was compiled"


def _failing_backend(gm, example_inputs):
    raise RuntimeError("no compiler here")


def test_a_failed_compile_warns_once_and_runs_the_plain_iteration(monkeypatch, fresh_compile):
    monkeypatch.setattr(fused_iteration, "BACKEND", _failing_backend)
    X, Y = relu_task(53, *SHAPE, batch=2)
    l1 = 0.3 * lambda1_all_off(X, Y)
    with pytest.warns(UserWarning, match="torch.compile of the solver iteration failed.*no compiler here") as record:
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
@pytest.mark.parametrize("l1", [0.0, 0.3])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_the_compiled_captured_iteration_takes_the_plain_cuda_steps(l1, dtype, fresh_compile):
    dev = torch.device("cuda")
    for seed in (55, 56):  # the second solve replays the first one's graph
        X, Y = relu_task(seed, *SHAPE, batch=4, dtype=dtype)
        l1t = l1 * lambda1_all_off(X, Y)
        X, Y, l1t = X.to(dev), Y.to(dev), l1t.to(dev)
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message=".*(CUDA graph|torch.compile)")
            (b_p, i_p), (b_c, i_c) = (InteriorPointSolver(tol=1e-5, cuda_graph=c, compiled=c).run(X, Y, l1t, 1.0)
                                      for c in (False, True))
        assert i_c.converged.all() and i_p.converged.all()
        if dtype == torch.float64:  # round-off apart: the same steps
            assert torch.equal(i_c.iterations.cpu(), i_p.iterations.cpu())
            torch.testing.assert_close(dual_weights(X, Y, b_c, l1t, 1.0), dual_weights(X, Y, b_p, l1t, 1.0), atol=1e-8, rtol=0)
        else:  # float32 products in another order may take a step more or less: both
            # primal values lie within tol of the optimum
            scale = torch.maximum(i_p.primal.abs(), torch.ones_like(i_p.primal))
            assert ((i_c.primal - i_p.primal).abs() <= 2e-5 * scale).all()
