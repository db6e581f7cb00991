"""The interior-point solver's synchronisation-free mode (the default off the CPU) against
its gathering mode: the same iterates, so the same solutions and iteration counts; its
batched line search against the sequential one; on a GPU, no host sync between checks."""

import warnings

import pytest
import torch

from fewshot_sparse.solvers import group_lasso_ipm
from fewshot_sparse.solvers.group_lasso_dual import dual_gradient, dual_weights
from fewshot_sparse.solvers.group_lasso_svm import GroupLassoSVMDual
from fewshot_sparse.solvers.ipm_line_search import backtrack, batched_line_search, state_merit
from tasks import lambda1_all_off, relu_task


@pytest.mark.parametrize("smoothing", [0.0, 1.0])
@pytest.mark.parametrize("shape", [(25, 300), (40, 30)])
def test_sync_free_mode_takes_the_same_steps(shape, smoothing):
    S, D = shape
    X, Y = relu_task(31, S, D, 5, batch=5)
    l1 = lambda1_all_off(X, Y) * torch.tensor([0.0, 0.02, 0.2, 0.6, 1.2], dtype=X.dtype)
    runs = [GroupLassoSVMDual(tol=1e-8, smoothing=smoothing, sync_free=f).run(X, Y, l1, 0.5) for f in (False, True)]
    (b0, i0), (b1, i1) = runs
    assert i0.converged.all() and i1.converged.all()
    # the same path, except where many groups sit at their threshold (D < S, s = 0, the slow
    # regime of docs/benchmarks.md): there the kinks make the path sensitive to round-off
    regular = i0.iterations <= 30
    assert regular.sum() >= 4 and torch.equal(i0.iterations[regular], i1.iterations[regular])
    torch.testing.assert_close(dual_weights(X, Y, b1, l1, 0.5), dual_weights(X, Y, b0, l1, 0.5), atol=1e-6, rtol=1e-6)


def test_sync_free_mode_gathers_to_shrinking_static_widths(monkeypatch):
    """With a check every iteration the sync-free mode gathers the rank-one groups to a
    power-of-two width read at each check (one loop per width): narrower than D as the
    pairs settle, and still the gathering mode's steps."""
    widths = []
    make_loop = group_lasso_ipm._loop
    monkeypatch.setattr(group_lasso_ipm, "_loop", lambda graph, compiled, o, *a: widths.append(o.width) or make_loop(graph, compiled, o, *a))
    X, Y = relu_task(34, 25, 600, 5, batch=3)
    l1 = lambda1_all_off(X, Y) * torch.tensor([0.1, 0.3, 0.6], dtype=X.dtype)
    b0, i0 = GroupLassoSVMDual(tol=1e-8, sync_free=False).run(X, Y, l1, 0.5)
    widths.clear()
    b1, i1 = GroupLassoSVMDual(tol=1e-8, sync_free=True).run(X, Y, l1, 0.5)
    assert i1.converged.all() and torch.equal(i0.iterations, i1.iterations)
    torch.testing.assert_close(b1, b0, atol=1e-7, rtol=0)
    narrowest = min(w for w in widths if w is not None)
    assert narrowest <= 128 and widths[-1] == narrowest != widths[0]  # (None: all D = 600 groups)
    assert len(set(widths)) <= 3  # a few widths (loops, CUDA graphs), each cached


class _Step:
    def __init__(self, d_beta, d_nu, d_z, alpha, d_p, d_q):
        self.d_beta, self.d_nu, self.d_z, self.alpha, self.d_p, self.d_q = d_beta, d_nu, d_z, alpha, d_p, d_q


@pytest.mark.parametrize("length", [0.05, 3.0, 40.0])
def test_batched_line_search_picks_what_backtracking_picks(length):
    """Random feasible directions of growing length: short ones pass at the full step,
    long ones need halvings (or none passes and the least merit wins). One task has
    lambda1 = 0 (its group pairs off)."""
    X, Y = relu_task(32, 20, 50, 4, batch=6)
    g = torch.Generator().manual_seed(3)
    l1 = (torch.tensor([0.3, 0.3, 0.0, 0.3, 0.6, 0.3], dtype=X.dtype) * lambda1_all_off(X, Y)).reshape(-1, 1, 1)
    l2 = torch.full((6, 1, 1), 0.5, dtype=X.dtype)
    on = (l1[:, :, 0] > 0).to(X.dtype)
    beta = torch.full_like(Y, 0.25)
    d_beta = torch.randn(Y.shape, generator=g, dtype=X.dtype)
    d_beta = length * (d_beta - d_beta.mean(-1, keepdim=True))
    z = torch.rand(Y.shape, generator=g, dtype=X.dtype) + 0.1
    nu = torch.randn(6, 20, 1, generator=g, dtype=X.dtype)
    p, q = (torch.rand(6, 50, generator=g, dtype=X.dtype) + 0.05 for _ in range(2))
    step = _Step(d_beta, torch.randn(nu.shape, generator=g, dtype=X.dtype), -0.5 * z,
                 torch.rand(6, 1, 1, generator=g, dtype=X.dtype) * 0.5 + 0.5,
                 length * torch.randn(p.shape, generator=g, dtype=X.dtype), -0.5 * q)

    def evaluate(b, p_b):  # (grad f, gaps, V, its row norms, the model gradient), written out here
        V = X.transpose(1, 2) @ (Y - b)
        n = V.norm(dim=-1)
        U = torch.where(l1 > 0, p_b[..., None] * V / n[..., None], V)
        return dual_gradient(X, Y, b, l1, l2, 0.0), None, V, n, Y - X @ U / l2

    _, _, V, n, grad = evaluate(beta, p)
    st = dict(beta=beta, nu=nu, z=z, gm=grad, V=V, norms=n, excess=p, slack=q)
    st["merit"] = state_merit(st, l1, l2, on)
    seq, chosen, seq_merit, point = backtrack(evaluate, l1, l2, on, st, step)
    bat, bat_merit = batched_line_search(X, Y, l1, l2, on, 0.0, st, step)
    torch.testing.assert_close(bat, seq, atol=0, rtol=1e-12)
    torch.testing.assert_close(bat_merit, seq_merit, atol=0, rtol=1e-9)
    # the evaluation returned is the one at the chosen point
    torch.testing.assert_close(chosen[-1], evaluate(beta + seq * step.d_beta, p + seq[..., 0] * step.d_p)[-1])
    torch.testing.assert_close(point[2], z + seq * step.d_z)  # and the point is the chosen one
    if length >= 40.0:  # the case the test is about: some task backtracked
        assert (seq < step.alpha).any()


@pytest.mark.gpu
def test_no_host_sync_between_checks_on_the_gpu():
    """With checks only at the start and the end, the number of synchronising CUDA calls
    does not grow with the number of iterations."""
    dev = torch.device("cuda")
    X, Y = relu_task(33, 25, 400, 5, batch=4, dtype=torch.float32)
    l1 = (0.2 * lambda1_all_off(X, Y)).to(dev)
    X, Y = X.to(dev), Y.to(dev)

    GroupLassoSVMDual(tol=0.0, max_iter=2).run(X, Y, l1, 1.0)  # captures the CUDA graph (syncs once)

    def syncs(iters):
        solver = GroupLassoSVMDual(tol=0.0, max_iter=iters, check_every=1000)
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                solver.run(X, Y, l1, 1.0)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        return sum("synchroniz" in str(w.message) for w in caught)

    assert syncs(12) == syncs(4)


@pytest.mark.gpu
@pytest.mark.parametrize("l1", [0.0, 0.3])
def test_cuda_matches_cpu(l1):
    X, Y = relu_task(12, 25, 300, 5, batch=4, dtype=torch.float32)
    l1t = l1 * lambda1_all_off(X, Y)
    b_cpu, i_cpu = GroupLassoSVMDual(tol=1e-5).run(X, Y, l1t, 1.0)
    Xc, Yc, l1c = (t.to(torch.device("cuda")) for t in (X, Y, l1t))
    b_gpu, i_gpu = GroupLassoSVMDual(tol=1e-5).run(Xc, Yc, l1c, 1.0)
    assert i_gpu.converged.all() and b_gpu.device.type == "cuda"
    torch.testing.assert_close(dual_weights(X, Y, b_cpu, l1t, 1.0),
                               dual_weights(Xc, Yc, b_gpu, l1c, 1.0).cpu(), atol=1e-3, rtol=1e-3)
