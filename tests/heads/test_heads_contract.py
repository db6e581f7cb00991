"""The head contract, closed-form checks and edge cases for every head in HEADS."""

import warnings

import numpy as np
import pytest
import torch

from fewshot_sparse.errors import ConfigError
from fewshot_sparse.heads import (
    HEADS,
    ConvergenceWarning,
    CrammerSingerSVMHead,
    GroupLassoSVMHead,
    HeadOutput,
    ProtoNetHead,
    RidgeHead,
    build_head,
    check_head_inputs,
)
from fewshot_sparse.solvers.info import SolverInfo

# small, fast settings for each registered head
HEAD_KWARGS = {
    "group_lasso_svm": dict(lambda1=0.5, lambda2=1.0, tol=1e-6, max_iter=20_000),
    "svm_cs": dict(lambda2=1.0, tol=1e-6, max_iter=20_000),
    "ridge": dict(lam=1.0),
    "protonet": dict(),
}


def episode(b=3, way=4, shot=2, n_query=5, d=12, dtype=torch.float64, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    s = way * shot
    support = torch.randn(b, s, d, generator=g, dtype=torch.float64)
    query = torch.randn(b, n_query, d, generator=g, dtype=torch.float64)
    labels = torch.stack([torch.randperm(s, generator=g) % way for _ in range(b)])
    return query.to(dtype=dtype, device=device), support.to(dtype=dtype, device=device), labels.to(device), way


def make(name, dtype=torch.float64, **overrides):
    head = build_head(name, **{**HEAD_KWARGS[name], **overrides})
    return head.to(dtype) if dtype == torch.float64 else head


# ------------------------------------------------------------------------------ contract
def test_registry_is_the_four_heads():
    assert HEADS == {
        "group_lasso_svm": GroupLassoSVMHead,
        "svm_cs": CrammerSingerSVMHead,
        "ridge": RidgeHead,
        "protonet": ProtoNetHead,
    }


def test_build_head_names_unknown_head_and_option():
    with pytest.raises(ConfigError, match="'lasso'.*group_lasso_svm"):
        build_head("lasso")
    with pytest.raises(ConfigError, match="lamda1"):
        build_head("group_lasso_svm", lamda1=0.1)
    with pytest.raises(ConfigError, match="lambda1"):  # svm_cs fixes lambda1 = 0
        build_head("svm_cs", lambda1=0.1)


@pytest.mark.parametrize("name", sorted(HEADS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_output_contract(name, dtype):
    query, support, labels, way = episode(dtype=dtype)
    q0, s0, y0 = query.clone(), support.clone(), labels.clone()
    head = make(name, dtype=dtype)
    out = head(query, support, labels, way)
    assert isinstance(out, HeadOutput)
    b, n_q, d = query.shape
    solve = torch.float64 if dtype == torch.float64 else torch.float32
    assert out.logits.shape == (b, n_q, way) and out.logits.dtype == solve
    assert out.weights.shape == (b, d, way) and out.weights.dtype == solve
    assert out.active.shape == (b, d) and out.active.dtype == torch.bool
    assert torch.equal(out.active, out.weights.abs().amax(-1) > 0)
    assert torch.isfinite(out.logits).all()
    if name in ("group_lasso_svm", "svm_cs"):
        assert isinstance(out.info, SolverInfo) and out.info.gap.shape == (b,)
    else:
        assert out.info is None
    # inputs untouched
    assert torch.equal(query, q0) and torch.equal(support, s0) and torch.equal(labels, y0)


@pytest.mark.parametrize("name", sorted(HEADS))
def test_heads_hold_no_support_state(name):
    head = make(name)
    query, support, labels, way = episode()
    before = set(head.state_dict())
    head(query, support, labels, way)
    assert set(head.state_dict()) == before
    for t in head.state_dict().values():
        assert t.dim() == 0  # scalar hyperparameters only


@pytest.mark.parametrize("name", sorted(HEADS))
def test_gradients_reach_features(name):
    query, support, labels, way = episode()
    query.requires_grad_()
    support.requires_grad_()
    out = make(name)(query, support, labels, way)
    g = torch.Generator().manual_seed(1)
    (out.logits * torch.randn(out.logits.shape, generator=g, dtype=out.logits.dtype)).sum().backward()
    assert torch.isfinite(support.grad).all() and support.grad.abs().sum() > 0
    assert torch.isfinite(query.grad).all() and query.grad.abs().sum() > 0


# ------------------------------------------------------------------------ closed forms
@pytest.mark.parametrize("shot,d", [(2, 12), (6, 5)])  # S <= D (Woodbury) and S > D
def test_ridge_matches_numpy(shot, d):
    query, support, labels, way = episode(shot=shot, d=d)
    lam = 0.7
    out = RidgeHead(lam=lam).double()(query, support, labels, way)
    for b in range(support.shape[0]):
        X = support[b].numpy()
        Y = np.eye(way)[labels[b].numpy()]
        W = np.linalg.solve(X.T @ X + lam * np.eye(d), X.T @ Y)
        np.testing.assert_allclose(out.weights[b].numpy(), W, rtol=1e-9, atol=1e-11)
        np.testing.assert_allclose(out.logits[b].numpy(), query[b].numpy() @ W, rtol=1e-9, atol=1e-11)


def test_ridge_scale_and_bias():
    query, support, labels, way = episode()
    plain = RidgeHead(lam=2.0).double()(query, support, labels, way)
    head = RidgeHead(lam=2.0, learn_scale=True, init_scale=3.0, learn_bias=True, init_bias=0.5).double()
    out = head(query, support, labels, way)
    torch.testing.assert_close(out.logits, 3.0 * plain.logits + 0.5)
    out.logits.sum().backward()
    assert head.scale.raw.grad is not None and head.bias.raw.grad is not None


def test_protonet_matches_direct_computation():
    query, support, labels, way = episode()
    out = ProtoNetHead().double()(query, support, labels, way)
    for b in range(support.shape[0]):
        protos = torch.stack([support[b][labels[b] == c].mean(0) for c in range(way)])
        dist = ((query[b][:, None, :] - protos[None, :, :]) ** 2).sum(-1)
        torch.testing.assert_close(out.logits[b], -dist)
        torch.testing.assert_close(out.weights[b], protos.T)
    scaled = ProtoNetHead(normalize=True, init_scale=2.0).double()(query, support, labels, way)
    torch.testing.assert_close(scaled.logits, 2.0 * out.logits / query.shape[-1])


def test_svm_cs_is_group_lasso_with_lambda1_zero():
    query, support, labels, way = episode()
    for smoothing in (0.0, 1.0):
        cs = CrammerSingerSVMHead(lambda2=2.0, smoothing=smoothing, tol=1e-8, max_iter=50_000).double()
        gl = GroupLassoSVMHead(lambda1=0.0, lambda2=2.0, smoothing=smoothing, tol=1e-8, max_iter=50_000).double()
        a, b = cs(query, support, labels, way), gl(query, support, labels, way)
        torch.testing.assert_close(a.logits, b.logits)
        torch.testing.assert_close(a.weights, b.weights)


def test_svm_cs_defaults_follow_metaoptnet():
    head = CrammerSingerSVMHead()
    assert float(head.lambda2(torch.float64, "cpu")) == 10.0  # C_reg = 0.1
    assert float(head.lambda1(torch.float64, "cpu")) == 0.0
    assert head.solver.smoothing == 1.0


# ---------------------------------------------------------------------------- sparsity
def test_group_lasso_sparsity_grows_with_lambda1():
    query, support, labels, way = episode(d=30)
    counts = []
    for lam in (0.0, 0.5, 2.0, 1e4):
        out = GroupLassoSVMHead(lambda1=lam, lambda2=1.0, tol=1e-8, max_iter=50_000).double()(
            query, support, labels, way)
        counts.append(int(out.active.sum()))
    assert counts[0] == support.shape[0] * 30
    assert counts == sorted(counts, reverse=True) and counts[-1] == 0


def test_all_features_off_gives_uniform_logits_and_zero_gradient():
    query, support, labels, way = episode()
    query.requires_grad_()
    support.requires_grad_()
    head = GroupLassoSVMHead(lambda1=1e4, lambda2=1.0, learn_lambdas=True).double()
    out = head(query, support, labels, way)
    assert not out.active.any()
    assert torch.count_nonzero(out.logits) == 0  # uniform: every class scores 0
    g = torch.Generator().manual_seed(2)
    (out.logits * torch.randn(out.logits.shape, generator=g, dtype=torch.float64)).sum().backward()
    assert torch.count_nonzero(support.grad) == 0
    assert torch.count_nonzero(query.grad) == 0
    assert float(head.lambda1.raw.grad) == 0.0 and float(head.lambda2.raw.grad) == 0.0


# --------------------------------------------------------------------------- edge cases
@pytest.mark.parametrize("name", sorted(HEADS))
def test_one_shot(name):
    query, support, labels, way = episode(shot=1, way=5)
    query.requires_grad_()
    support.requires_grad_()
    out = make(name)(query, support, labels, way)
    out.logits.square().sum().backward()
    assert torch.isfinite(support.grad).all() and torch.isfinite(query.grad).all()
    if out.info is not None:
        assert out.info.all_converged


@pytest.mark.parametrize("name", sorted(HEADS))
def test_duplicated_support_points(name):
    query, support, labels, way = episode(shot=2)
    support = torch.cat([support, support], dim=1).requires_grad_()  # every point twice
    labels = torch.cat([labels, labels], dim=1)
    query.requires_grad_()
    out = make(name)(query, support, labels, way)
    out.logits.square().sum().backward()
    assert torch.isfinite(out.logits).all()
    assert torch.isfinite(support.grad).all() and torch.isfinite(query.grad).all()
    if out.info is not None:
        assert out.info.all_converged
    if name == "protonet":  # duplicates do not move class means
        q, s, y, w = episode(shot=2)
        torch.testing.assert_close(out.logits.detach(), ProtoNetHead().double()(q, s, y, w).logits)


def test_learnable_lambdas_are_positive_and_get_gradients():
    head = GroupLassoSVMHead(lambda1=0.3, lambda2=2.0, tol=1e-8, max_iter=50_000,
                             learn_lambdas=True, learn_scale=True).double()
    names = {n for n, _ in head.named_parameters()}
    assert names == {"lambda1.raw", "lambda2.raw", "scale.raw"}
    assert float(head.lambda1.raw.detach()) == pytest.approx(np.log(0.3))
    query, support, labels, way = episode()
    out = head(query, support, labels, way)
    g = torch.Generator().manual_seed(3)
    (out.logits * torch.randn(out.logits.shape, generator=g, dtype=torch.float64)).sum().backward()
    for p in head.parameters():
        assert p.grad is not None and torch.isfinite(p.grad) and p.grad != 0


def test_lambda1_zero_stays_fixed_when_learning():
    head = GroupLassoSVMHead(lambda1=0.0, lambda2=1.0, learn_lambdas=True)
    assert {n for n, _ in head.named_parameters()} == {"lambda2.raw"}


def test_non_convergence_is_reported_in_info_and_the_head_never_warns():
    """Heads return the solver's report; warning is the aggregating caller's job (once)."""
    query, support, labels, way = episode()
    head = GroupLassoSVMHead(lambda1=0.1, lambda2=0.01, tol=1e-12, max_iter=2).double()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = head(query, support, labels, way)
    assert not out.info.all_converged
    assert (out.info.iterations <= 2).all() and (out.info.gap > 1e-12).all()
    assert not [w for w in caught if issubclass(w.category, ConvergenceWarning)]


# --------------------------------------------------------------------------- bad input
def _bad_cases():
    q, s, y, w = episode(b=2, way=3, shot=2, d=6, dtype=torch.float32)
    nan_s, inf_q = s.clone(), q.clone()
    nan_s[0, 1, 2] = float("nan")
    inf_q[1, 0, 0] = float("inf")
    missing = y.clone()
    missing[1][missing[1] == 2] = 0
    return {
        "query rank": ((q[0], s, y, w), "query"),
        "support rank": ((q, s[0], y, w), "support"),
        "labels rank": ((q, s, y[0], w), "support_labels"),
        "feature dim": ((q[..., :5], s, y, w), "query"),
        "batch dim": ((q[:1], s, y, w), "query"),
        "labels shape": ((q, s, y[:, :-1], w), "support_labels"),
        "dtype mismatch": ((q.double(), s, y, w), "query"),
        "float labels": ((q, s, y.float(), w), "support_labels"),
        "int features": ((q, s.long(), y, w), "support"),
        "label too big": ((q, s, y + 1, w), "support_labels"),
        "negative label": ((q, s, y - 1, w), "support_labels"),
        "missing class": ((q, s, missing, w), "support_labels"),
        "nan support": ((q, nan_s, y, w), "support"),
        "inf query": ((inf_q, s, y, w), "query"),
        "bad n_way": ((q, s, y, 0), "n_way"),
    }


BAD = _bad_cases()


@pytest.mark.parametrize("name", sorted(HEADS))
@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_names_the_argument(name, case):
    args, argname = BAD[case]
    with pytest.raises(ValueError, match=argname):
        make(name, dtype=torch.float32)(*args)


@pytest.mark.parametrize(
    "name,kwargs,argname",
    [
        ("group_lasso_svm", dict(lambda1=-0.1), "lambda1"),
        ("group_lasso_svm", dict(lambda2=-1.0), "lambda2"),
        ("group_lasso_svm", dict(lambda2=0.0), "lambda2"),
        ("group_lasso_svm", dict(smoothing=-1.0), "smoothing"),
        ("group_lasso_svm", dict(mode="adjoint"), "mode"),
        ("svm_cs", dict(lambda2=-10.0), "lambda2"),
        ("ridge", dict(lam=-1.0), "lam"),
        ("ridge", dict(lam=float("nan")), "lam"),
    ],
)
def test_bad_hyperparameters_rejected(name, kwargs, argname):
    with pytest.raises(ValueError, match=argname):  # the head itself: a ValueError
        HEADS[name](**kwargs)
    with pytest.raises(ConfigError, match=argname):  # built from a config: the project's error
        build_head(name, **kwargs)


# --------------------------------------------------------------------------------- gpu
@pytest.mark.gpu
@pytest.mark.parametrize("name", sorted(HEADS))
def test_cpu_and_cuda_agree(name):
    q, s, y, w = episode(dtype=torch.float64)
    head = make(name)
    cpu = head(q, s, y, w)
    cuda = head.to("cuda")(q.cuda(), s.cuda(), y.cuda(), w)
    assert cuda.logits.device.type == "cuda" and cuda.active.device.type == "cuda"
    torch.testing.assert_close(cuda.logits.cpu(), cpu.logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cuda.weights.cpu(), cpu.weights, rtol=1e-5, atol=1e-5)
    assert torch.equal(cuda.active.cpu(), cpu.active)


@pytest.mark.gpu
def test_the_input_check_reads_the_device_once():
    """The head's input check (labels, missing classes, NaN / inf, scale) waits for the GPU
    once, not once a check (seven before)."""
    q, s, y, w = episode(b=4, way=5, shot=5, n_query=15, d=64, dtype=torch.float32, device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            check_head_inputs(q, s, y, w)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert sum("synchroniz" in str(c.message) for c in caught) <= 1


@pytest.mark.parametrize("name", ["group_lasso_svm", "svm_cs"])
def test_cuda_graph_option_reaches_the_solver(name):
    """true (the default) leaves the choice to the solver (captured on CUDA only), false
    turns it off; anything but a bool is a config error."""
    assert build_head(name).solver.cuda_graph is None
    assert build_head(name, cuda_graph=False).solver.cuda_graph is False
    with pytest.raises(ConfigError, match="cuda_graph"):
        build_head(name, cuda_graph="no")


@pytest.mark.parametrize("name", ["group_lasso_svm", "svm_cs"])
def test_compiled_option_reaches_the_solver_in_the_sync_free_mode(name):
    """off by default; true compiles the iteration, which needs the sync-free mode on
    every device (the CPU default gathers on the host)."""
    solver = build_head(name).solver
    assert solver.compiled is False and solver.sync_free is None
    solver = build_head(name, compiled=True).solver
    assert solver.compiled is True and solver.sync_free is True
    with pytest.raises(ConfigError, match="compiled"):
        build_head(name, compiled="yes")
