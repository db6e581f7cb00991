"""The CUDA-graph loop of the interior-point solver: its static-buffer twin (what a
captured graph replays, run uncaptured) takes the steps of the eager loop, also
when a cached loop is reloaded with another problem of the same shape; on a GPU, the
captured graph takes the steps the eager CUDA loop takes."""

import warnings

import pytest
import torch

from fewshot_sparse.solvers import graph_loop
from fewshot_sparse.solvers.group_lasso_dual import dual_weights
from fewshot_sparse.solvers.group_lasso_ipm import InteriorPointSolver
from tasks import lambda1_all_off, relu_task


def _fibonacci(state, consts):
    """Outputs that alias another state buffer (a <- b) must be read before b is written."""
    return {"b": state["a"] + state["b"] * consts["one"], "a": state["b"]}


def test_an_output_aliasing_another_buffer_is_read_before_that_buffer_is_written():
    graph_loop.clear_graph_cache()
    state = {"a": torch.tensor([0.0]), "b": torch.tensor([1.0])}
    loop = graph_loop.graph_loop("fib", _fibonacci, state, {"one": torch.tensor([1.0])})
    for _ in range(10):
        loop.step()
    assert loop.state["a"].item() == 55.0 and loop.state["b"].item() == 89.0
    assert state["a"].item() == 0.0  # the caller's tensors are copied, never written


def test_the_cache_keeps_the_latest_loops_and_reloads_them():
    graph_loop.clear_graph_cache()
    for key in range(graph_loop.CACHE_SIZE + 2):
        graph_loop.graph_loop(key, _fibonacci, {"a": torch.zeros(1), "b": torch.ones(1)}, {"one": torch.ones(1)})
    assert list(graph_loop._cache) == list(range(2, graph_loop.CACHE_SIZE + 2))
    loop = graph_loop.graph_loop(3, _fibonacci, {"a": torch.full((1,), 2.0), "b": torch.full((1,), 3.0)},
                                 {"one": torch.full((1,), 10.0)})
    loop.step()
    assert loop.state["b"].item() == 32.0 and list(graph_loop._cache)[-1] == 3


class _ReplayingGraph:
    """Stands in for a captured graph on the CPU: replays the loop's step, and corrupts
    the ``bad_replay``-th replay the way a value frozen at capture time would."""

    def __init__(self, loop, bad_replay=None):
        self.loop, self.bad_replay, self.replays = loop, bad_replay, 0

    def replay(self):
        self.replays += 1
        self.loop._advance()
        if self.replays == self.bad_replay:
            self.loop.state["b"].add_(1.0)


@pytest.mark.parametrize("bad_replay", [None, 1, 2])
def test_the_first_replays_are_checked_against_the_uncaptured_step(bad_replay, recwarn):
    graph_loop.clear_graph_cache()
    loop = graph_loop.graph_loop("fib", _fibonacci, {"a": torch.tensor([0.0]), "b": torch.tensor([1.0])},
                                 {"one": torch.tensor([1.0])})
    graph = _ReplayingGraph(loop, bad_replay)
    loop._capture, loop._captured = True, lambda: graph
    for _ in range(10):
        loop.step()
    assert loop.state["a"].item() == 55.0 and loop.state["b"].item() == 89.0  # the right steps either way
    warned = [w for w in recwarn if "disagrees with the uncaptured iteration on b" in str(w.message)]
    if bad_replay is None:
        assert not warned and loop._graph is graph and graph.replays == 10
    else:  # caught, and uncaptured from then on
        assert len(warned) == 1 and loop._graph is None and graph.replays == bad_replay


def _solve(X, Y, l1, s, graph, beta0=None):
    return InteriorPointSolver(tol=1e-8, smoothing=s, sync_free=True, cuda_graph=graph).run(X, Y, l1, 0.5, beta0=beta0)


@pytest.mark.parametrize("smoothing", [0.0, 1.0])
@pytest.mark.parametrize("lambda1", ["zero", "mixed"])
@pytest.mark.parametrize("shape", [(25, 120), (40, 30)])  # D < S: the model path even at lambda1 = 0
def test_the_static_buffer_twin_takes_the_eager_steps(smoothing, lambda1, shape):
    graph_loop.clear_graph_cache()
    for seed, warm in ((41, False), (42, False), (43, True)):  # the 2nd and 3rd reload the cached loop
        X, Y = relu_task(seed, *shape, 5, batch=4)
        l1 = lambda1_all_off(X, Y) * torch.tensor([0.0, 0.05, 0.3, 0.8], dtype=X.dtype)
        l1 = torch.zeros_like(l1) if lambda1 == "zero" else l1
        beta0 = torch.softmax(torch.randn(Y.shape, generator=torch.Generator().manual_seed(seed), dtype=X.dtype), -1) if warm else None
        (b_e, i_e), (b_g, i_g) = (_solve(X, Y, l1, smoothing, g, beta0) for g in (False, True))
        assert i_e.converged.all() and torch.equal(i_g.iterations, i_e.iterations)
        # the weights (unique) to round-off: the two runs' tensors sit at other addresses,
        # which moved the last bit of a start point before any step (seed 43, reloaded
        # loop), and a task near lambda_max, whose dual is barely unique, carries that to
        # 2e-10 in beta and 2e-14 in W
        torch.testing.assert_close(dual_weights(X, Y, b_g, l1, 0.5), dual_weights(X, Y, b_e, l1, 0.5), atol=1e-12, rtol=0)
    # one loop per gather width (lambda1 > 0), the same for every call of this shape
    assert len({key[:4] + (key[4]._replace(width=None),) + key[5:] for key in graph_loop._cache}) == 1
    # and one set of buffers for them all: a move to another width copies nothing
    loops = list(graph_loop._cache.values())
    for buffers in ("state", "consts"):
        assert len({tuple(v.data_ptr() for v in getattr(loop, buffers).values()) for loop in loops}) == 1


def test_a_cached_loop_serves_only_states_with_its_keys():
    """The same shape solved with a check every 2 iterations (no curvature carried in the
    state) and then every iteration (carried): two loops, each with the eager steps."""
    graph_loop.clear_graph_cache()
    X, Y = relu_task(47, 25, 48, 5, batch=3)
    l1 = lambda1_all_off(X, Y) * torch.tensor([0.0, 0.2, 0.7], dtype=X.dtype)
    for every in (2, 1, 2):
        (b_e, i_e), (b_g, i_g) = (InteriorPointSolver(tol=1e-8, sync_free=True, cuda_graph=g, check_every=every)
                                  .run(X, Y, l1, 0.5) for g in (False, True))
        assert torch.equal(i_g.iterations, i_e.iterations)
        torch.testing.assert_close(b_g, b_e, atol=1e-12, rtol=0)
    assert len(graph_loop._cache) == 2


def test_cuda_graph_needs_the_sync_free_mode():
    X, Y = relu_task(44, 10, 20, 3, batch=1)
    with pytest.raises(ValueError, match="sync-free"):
        InteriorPointSolver(sync_free=False, cuda_graph=True).run(X, Y, 0.1, 1.0)


@pytest.mark.gpu
@pytest.mark.parametrize("l1", [0.0, 0.3])
def test_the_captured_graph_takes_the_eager_cuda_steps(l1):
    graph_loop.clear_graph_cache()
    dev = torch.device("cuda")
    for seed in (45, 46):  # the second solve replays the first one's graph
        X, Y = relu_task(seed, 25, 300, 5, batch=4, dtype=torch.float32)
        l1t = l1 * lambda1_all_off(X, Y)
        X, Y, l1t = X.to(dev), Y.to(dev), l1t.to(dev)
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message=".*CUDA graph")  # a failed capture, a disagreeing replay
            (b_e, i_e), (b_g, i_g) = (InteriorPointSolver(tol=1e-5, cuda_graph=g).run(X, Y, l1t, 1.0) for g in (False, True))
        assert next(iter(graph_loop._cache.values()))._graph is not None, "the iteration was not captured"
        assert i_g.converged.all() and torch.equal(i_g.iterations.cpu(), i_e.iterations.cpu())
        torch.testing.assert_close(dual_weights(X, Y, b_g, l1t, 1.0), dual_weights(X, Y, b_e, l1t, 1.0), atol=1e-5, rtol=1e-5)
