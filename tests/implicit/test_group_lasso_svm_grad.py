"""Implicit gradients of the group-Lasso SVM solution against finite differences of an
independent CVXPY solve, against unrolled FISTA, and torch.autograd.gradcheck (float64)."""

import pytest
import torch

from cvx_glsvm import solve_primal
from fewshot_sparse.implicit.group_lasso_svm_grad import group_lasso_svm_fit
from fewshot_sparse.solvers.group_lasso_newton import free_entries
from fewshot_sparse.solvers.group_lasso_dual import dual_weights, task_param
from fewshot_sparse.solvers.group_lasso_svm import GroupLassoSVMDual

TIGHT = GroupLassoSVMDual(tol=1e-13, max_iter=100000)


def make_task(seed, S, D, W, Q=6):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(1, S, D, generator=g)
    y = torch.randperm(S, generator=g)[None] % W
    Y = torch.nn.functional.one_hot(y, W).to(X.dtype)
    Xq = torch.randn(1, Q, D, generator=g)
    Cw = torch.randn(1, D, W, generator=g)  # random linear function of W
    Cq = torch.randn(1, Q, W, generator=g)  # random linear function of the query logits
    E = torch.randn(1, S, D, generator=g)  # a direction in X
    return X, Y, Xq, Cw, Cq, E


def objective(W, Xq, Cw, Cq):
    return (W * Cw).sum() + (torch.bmm(Xq, W) * Cq).sum()


def faces(X, Y, l1, l2, smoothing=0.0):
    """(active groups, free entries) of the tight solution: used to check that finite
    differences do not cross a kink."""
    solver = GroupLassoSVMDual(tol=1e-13, max_iter=100000, smoothing=smoothing)
    beta, _ = solver.run(X, Y, l1, l2)
    l1t, l2t = task_param(l1, 1, X), task_param(l2, 1, X)
    W = dual_weights(X, Y, beta, l1, l2)
    return (W.norm(dim=-1) > 0), free_entries(X, Y, beta, l1t, l2t, smoothing)


CASES = [
    # seed, S, D, W, lambda1 (fraction of the all-off value), lambda2, smoothing
    (0, 10, 15, 3, 0.0, 1.0, 0.0),
    (1, 12, 20, 4, 0.3, 1.0, 0.0),
    (2, 9, 25, 3, 0.5, 10.0, 0.0),
    (3, 15, 12, 5, 0.2, 0.1, 0.0),
    (4, 10, 15, 3, 0.4, 1.0, 1.0),
    (5, 12, 8, 4, 0.0, 0.5, 1.0),
]


def lambda1_all_off(X, Y):
    W = Y.shape[-1]
    V = X.transpose(1, 2) @ (Y - (1.0 - Y) / (W - 1))
    return 1.01 * float(torch.linalg.vector_norm(V, dim=-1).max())


@pytest.mark.reference
@pytest.mark.parametrize("seed,S,D,W,frac,l2,s", CASES)
def test_implicit_gradient_matches_cvxpy_finite_differences(seed, S, D, W, frac, l2, s):
    X, Y, Xq, Cw, Cq, E = make_task(seed, S, D, W)
    l1 = frac * lambda1_all_off(X, Y)
    solver = GroupLassoSVMDual(tol=1e-13, max_iter=100000, smoothing=s)
    Xr = X.clone().requires_grad_()
    l1t = torch.tensor(l1, requires_grad=True)
    l2t = torch.tensor(l2, requires_grad=True)
    Wt, _, info = group_lasso_svm_fit(Xr, Y, l1t, l2t, solver)
    assert info.converged.all()
    objective(Wt, Xq, Cw, Cq).backward()

    def phi(Xv, l1v, l2v):
        Wc, _ = solve_primal(Xv[0].numpy(), Y[0].numpy(), l1v, l2v, s)
        return float(objective(torch.from_numpy(Wc)[None], Xq, Cw, Cq))

    h = 1e-3  # CVXPY solutions are accurate to ~1e-9: a larger step keeps FD noise small
    base = faces(X, Y, l1, l2, s)
    fd_checks = [
        ("X", (X + h * E, l1, l2), (X - h * E, l1, l2), float((Xr.grad * E).sum())),
        ("lambda2", (X, l1, l2 + h), (X, l1, l2 - h), float(l2t.grad)),
    ]
    if l1 > 0:  # at lambda1 = 0 only the one-sided derivative exists
        fd_checks.append(("lambda1", (X, l1 + h, l2), (X, l1 - h, l2), float(l1t.grad)))
    def phi_own(Xv, l1v, l2v):  # the same finite difference on this package's polished solver
        b, _ = solver.run(Xv, Y, l1v, l2v)
        return float(objective(dual_weights(Xv, Y, b, l1v, l2v), Xq, Cw, Cq))

    for name, plus, minus, analytic in fd_checks:
        for args in (plus, minus):  # the finite difference must not cross a kink
            a, f = faces(*args[:1], Y, *args[1:], s)
            assert torch.equal(a, base[0]) and torch.equal(f, base[1]), f"{name}: face changes, pick another seed"
        # CVXPY solutions carry errors ~1e-7..1e-6 in phi, hence the looser bound
        fd = (phi(*plus) - phi(*minus)) / (2 * h)
        assert abs(analytic - fd) <= 2e-3 * max(1.0, abs(fd)), (name, analytic, fd)
        ho = 1e-5  # the own solver is accurate to ~1e-12, so a small step and a tight bound
        sp = [(z - a) / h * ho + a for z, a in zip(plus, (X, l1, l2))]
        sm = [(z - a) / h * ho + a for z, a in zip(minus, (X, l1, l2))]
        fd_own = (phi_own(*sp) - phi_own(*sm)) / (2 * ho)
        assert abs(analytic - fd_own) <= 1e-5 * max(1.0, abs(fd_own)), (name, analytic, fd_own)


@pytest.mark.parametrize("seed,S,D,W,frac,l2,s", CASES)
def test_implicit_equals_unrolled_at_convergence(seed, S, D, W, frac, l2, s):
    X, Y, Xq, Cw, Cq, _ = make_task(seed, S, D, W)
    l1 = frac * lambda1_all_off(X, Y)
    grads = {}
    for mode in ("implicit", "unrolled"):
        solver = GroupLassoSVMDual(tol=1e-12, max_iter=20000, smoothing=s)
        Xr = X.clone().requires_grad_()
        l1t = torch.tensor(l1, requires_grad=True)
        l2t = torch.tensor(l2, requires_grad=True)
        Wt, _, info = group_lasso_svm_fit(Xr, Y, l1t, l2t, solver, mode=mode)
        assert info.converged.all(), (mode, info.summary())
        objective(Wt, Xq, Cw, Cq).backward()
        grads[mode] = torch.cat([Xr.grad.flatten(), l1t.grad.reshape(1), l2t.grad.reshape(1)])
    gi, gu = grads["implicit"], grads["unrolled"]
    assert torch.linalg.vector_norm(gi - gu) <= 1e-4 * torch.linalg.vector_norm(gu).clamp_min(1e-8)


def test_gradcheck_tiny_problem():
    X, Y, Xq, Cw, Cq, _ = make_task(21, 5, 4, 3)
    lam = lambda1_all_off(X, Y)

    def fit(Xv, l1v, l2v):
        return group_lasso_svm_fit(Xv, Y, l1v, l2v, TIGHT)[0]

    inputs = (X.clone().requires_grad_(), torch.tensor(0.3 * lam, requires_grad=True), torch.tensor(0.7, requires_grad=True))
    assert torch.autograd.gradcheck(fit, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


def test_all_features_off_gives_zero_gradient():
    X, Y, Xq, Cw, Cq, _ = make_task(22, 10, 12, 4)
    Xr = X.clone().requires_grad_()
    l1 = torch.tensor(2.0 * lambda1_all_off(X, Y), requires_grad=True)
    l2 = torch.tensor(1.0, requires_grad=True)
    Wt, _, _ = group_lasso_svm_fit(Xr, Y, l1, l2, TIGHT)
    assert (Wt == 0).all()
    objective(Wt, Xq, Cw, Cq).backward()
    assert (Xr.grad == 0).all() and float(l1.grad) == 0 and float(l2.grad) == 0


def test_batched_per_task_lambdas_and_duplicated_points():
    """Per-task lambda tensors get per-task gradients; a non-unique dual (duplicated support
    points) still gives finite gradients that match the symmetric finite difference."""
    g = torch.Generator().manual_seed(23)
    X = torch.randn(3, 8, 10, generator=g)
    X = torch.cat([X, X[:, :2]], 1)
    y = torch.arange(10).remainder(3)
    y = torch.cat([y[:8], y[:2]])[None].expand(3, 10)
    Y = torch.nn.functional.one_hot(y, 3).to(X.dtype)
    Cw = torch.randn(3, 10, 3, generator=g)
    l1 = torch.tensor([0.0, 1.0, 3.0], requires_grad=True)
    l2 = torch.tensor([1.0, 2.0, 0.5], requires_grad=True)
    Xr = X.clone().requires_grad_()
    Wt, _, info = group_lasso_svm_fit(Xr, Y, l1, l2, TIGHT)
    assert info.converged.all()
    (Wt * Cw).sum().backward()
    assert l1.grad.shape == (3,) and l2.grad.shape == (3,)
    assert torch.isfinite(Xr.grad).all()
    # symmetric direction: move each duplicated pair together
    E = torch.randn(3, 8, 10, generator=g)
    E = torch.cat([E, E[:, :2]], 1)
    h = 1e-5

    def val(Xv):
        b, _ = TIGHT.run(Xv, Y, l1.detach(), l2.detach())
        return float((dual_weights(Xv, Y, b, l1.detach(), l2.detach()) * Cw).sum())

    fd = (val(X + h * E) - val(X - h * E)) / (2 * h)
    analytic = float((Xr.grad * E).sum())
    assert abs(analytic - fd) <= 1e-4 * max(1.0, abs(fd)), (analytic, fd)


def test_unknown_mode_is_refused():
    X, Y, *_ = make_task(0, 4, 3, 2)
    with pytest.raises(ValueError):
        group_lasso_svm_fit(X, Y, 0.1, 1.0, TIGHT, mode="magic")


def _gradient(X, Y, Xq, Cq, mode, create_graph):
    Xg = X.clone().requires_grad_()
    W, _, _ = group_lasso_svm_fit(Xg, Y, 0.05, 1.0, TIGHT, mode=mode)
    loss = (torch.bmm(Xq, W) * Cq).square().sum()
    (g,) = torch.autograd.grad(loss, Xg, create_graph=create_graph)
    return g, Xg


def test_the_implicit_gradient_refuses_a_second_order_by_name():
    """Differentiating the implicit gradient again (create_graph=True) raises an error
    naming the head and the way out, where it used to return a second derivative 28% off
    the finite differences (beta* and the adjoint held fixed); the first-order gradient
    under create_graph is the plain one. The unrolled mode's second order matches
    central differences of its own first-order gradient."""
    X, Y, Xq, _, Cq, E = make_task(5, S=9, D=8, W=3)
    X = X.double().clamp_min(0.0)
    Y, Xq, Cq, E = Y.double(), Xq.double(), Cq.double(), E.double()
    g, Xg = _gradient(X, Y, Xq, Cq, "implicit", create_graph=True)
    assert torch.equal(g.detach(), _gradient(X, Y, Xq, Cq, "implicit", create_graph=False)[0])
    with pytest.raises(RuntimeError, match="group-Lasso SVM's implicit gradient is first order.*unrolled"):
        torch.autograd.grad(g.square().sum(), Xg)

    g, Xg = _gradient(X, Y, Xq, Cq, "unrolled", create_graph=True)
    (gg,) = torch.autograd.grad(g.square().sum(), Xg)
    eps = 1e-6
    up, down = (_gradient(X + t * E, Y, Xq, Cq, "unrolled", False)[0].square().sum() for t in (eps, -eps))
    torch.testing.assert_close((gg * E).sum(), (up - down) / (2 * eps), rtol=1e-4, atol=0.0)
