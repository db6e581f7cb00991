"""The implicit gradient's closed-form pullbacks (implicit/pullbacks.py, prox.py) against
autograd on the maps they differentiate: BST, W(beta, theta) and grad f(beta, theta)."""

import pytest
import torch

from fewshot_sparse.implicit.pullbacks import parameter_pullback, weights_pullback
from fewshot_sparse.solvers.group_lasso_dual import dual_gradient, dual_weights, task_param
from fewshot_sparse.solvers.prox import block_soft_threshold, block_soft_threshold_vjp


def _autograd_bst(v, lam, h):
    v, lam = v.clone().requires_grad_(), lam.clone().requires_grad_()
    (block_soft_threshold(v, lam) * h).sum().backward()
    return v.grad, lam.grad


@pytest.mark.parametrize("lam", [0.0, 0.8, 5.0])
def test_the_bst_pullback_is_autograds(lam):
    g = torch.Generator().manual_seed(0)
    v = torch.randn(3, 20, 4, generator=g)
    v[0, 3] = 0.0  # a zero row: in the dead zone for lam > 0, passed through for lam = 0
    v[1, 5] *= 0.8 / v[1, 5].norm()  # a row exactly at the threshold lam = 0.8: off, as in the forward
    h = torch.randn(3, 20, 4, generator=g)
    lam_t = torch.full((3, 1, 1), lam)
    dv, dlam = block_soft_threshold_vjp(v, lam_t, h)
    ref_v, ref_lam = _autograd_bst(v, lam_t, h)
    torch.testing.assert_close(dv, ref_v, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dlam, ref_lam, rtol=1e-12, atol=1e-12)
    if lam == 0.0:
        torch.testing.assert_close(dv, h, rtol=0, atol=0)  # the identity's pullback, exactly


def _problem(seed, dtype, W=5, S=15, D=40, B=3):
    g = torch.Generator().manual_seed(seed)
    X = torch.relu(torch.randn(B, S, D, generator=g, dtype=torch.float64))
    X[:, :, 0] = 0.0  # a feature no point uses: V_j = 0
    Y = torch.nn.functional.one_hot(torch.arange(S) % W, W).to(torch.float64).expand(B, S, W).contiguous()
    beta = torch.softmax(2 * torch.randn(B, S, W, generator=g, dtype=torch.float64), -1)
    beta[:, 0] = Y[:, 0]  # a vertex of the simplex
    G = torch.randn(B, D, W, generator=g, dtype=torch.float64)
    u = torch.randn(B, S, W, generator=g, dtype=torch.float64)
    return X.to(dtype), Y.to(dtype), beta, G.to(dtype), u


def _autograd_reference(X, Y, beta, lambda1, lambda2, s, G, u):
    """<G, W(beta)> - <u, grad f(beta)> differentiated by autograd (the backward's former
    implementation): (g_beta, dX, dlambda1, dlambda2)."""
    B = X.shape[0]
    Xd, l1d, l2d = (t.clone().requires_grad_() for t in (X, lambda1, lambda2))
    bd = beta.clone().requires_grad_()
    l1, l2 = task_param(l1d, B, Xd), task_param(l2d, B, Xd)
    direct = (dual_weights(Xd, Y, bd, l1, l2) * G).sum()
    (g_beta,) = torch.autograd.grad(direct, bd, retain_graph=True)
    obj = direct - (dual_gradient(Xd, Y, bd, l1, l2, s) * u).sum()
    return (g_beta, *torch.autograd.grad(obj, (Xd, l1d, l2d)))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("l1_scale,s", [(0.0, 0.0), (0.4, 0.0), (0.4, 1.0), (1.0, 0.0), (100.0, 1.0)])
def test_the_pullbacks_are_autograds_through_the_maps(dtype, l1_scale, s):
    X, Y, beta, G, u = _problem(1, dtype)
    V64 = X.double().transpose(1, 2) @ (Y.double() - beta)
    typical = V64.norm(dim=-1).median()
    lambda1 = (l1_scale * typical * torch.tensor([0.5, 1.0, 1.5], dtype=torch.float64)).to(dtype)  # per task
    lambda2 = torch.tensor(0.7, dtype=dtype)  # one for all tasks
    l1, l2 = task_param(lambda1, 3, X), task_param(lambda2, 3, X)
    g_beta, V = weights_pullback(X, Y, beta, l1, l2, G)
    dX, dl1, dl2 = parameter_pullback(X, Y, beta, l1, l2, s, G, u, V)
    ref_beta, ref_X, ref_l1, ref_l2 = _autograd_reference(X, Y, beta, lambda1, lambda2, s, G, u)
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    assert g_beta.dtype == beta.dtype and dX.dtype == dtype
    for got, ref in ((g_beta, ref_beta), (dX, ref_X), (dl1.flatten(), ref_l1), (dl2.sum(), ref_l2)):
        scale = ref.abs().max().clamp_min(1.0)
        assert float((got.double() - ref.double()).abs().max()) <= tol * float(scale)
    if l1_scale == 100.0:  # every group off: W = 0 near theta, so only the smoothing term moves
        assert float(dX.abs().max()) == 0.0 and float(dl1.abs().max()) == 0.0
