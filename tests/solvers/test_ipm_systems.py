"""The interior point's Newton systems (ipm_systems.py) against a dense bordered KKT solve."""

import pytest
import torch

from fewshot_sparse.solvers.dual_hessian import curvature, dual_hessian, first_columns, hessian_factors
from fewshot_sparse.solvers.ipm_groups import central_pairs
from fewshot_sparse.solvers.ipm_systems import KroneckerSystem, NullSpaceSystem, class_block, cholesky_solve, lower_gram, sum_of_inverses
from tasks import lambda1_all_off, relu_task

F64 = torch.float64


def dense_newton_solve(H: torch.Tensor, d: torch.Tensor, r: torch.Tensor):
    """[[H + diag(d), E^T], [E, 0]] [d_beta; d_nu] = [r; 0], E the row sums of [S, W],
    solved densely per task: the independent reference."""
    B, S, W = d.shape
    n = S * W
    E = torch.kron(torch.eye(S, dtype=F64), torch.ones(1, W, dtype=F64))  # [S, S W]
    out_b, out_n = [], []
    for b in range(B):
        K = torch.zeros(n + S, n + S, dtype=F64)
        K[:n, :n] = H[b] + torch.diag(d[b].reshape(-1))
        K[:n, n:], K[n:, :n] = E.T, E
        x = torch.linalg.solve(K, torch.cat([r[b].reshape(-1), torch.zeros(S, dtype=F64)]))
        out_b.append(x[:n].reshape(S, W))
        out_n.append(x[n:].reshape(S, 1))
    return torch.stack(out_b), torch.stack(out_n)


def barrier_and_rhs(seed: int, shape):
    g = torch.Generator().manual_seed(seed)
    d = torch.rand(shape, generator=g, dtype=F64) * 10.0 ** (4 * torch.rand(shape, generator=g, dtype=F64) - 2)
    return d, torch.randn(shape, generator=g, dtype=F64)


@pytest.mark.parametrize("smoothing", [0.0, 1.0])
def test_null_space_system_matches_the_dense_kkt_solve(smoothing):
    X, Y = relu_task(seed=3, S=12, D=30, W=4, batch=2)
    beta = torch.full_like(Y, 0.25)
    l1 = (torch.tensor([0.3, 0.8], dtype=F64) * lambda1_all_off(X, Y)).reshape(2, 1, 1)
    l2 = torch.tensor([0.5, 2.0], dtype=F64).reshape(2, 1, 1)
    H = dual_hessian(X, Y, beta, l1, l2, smoothing)
    factors = hessian_factors(X, Y, beta, l1, l2, smoothing)
    assert factors.Xg is not None  # the rank-one part is exercised
    for seed in (0, 1):
        d, r = barrier_and_rhs(seed, Y.shape)
        system = NullSpaceSystem(factors, d, torch.zeros(2, 1, 1, dtype=F64))
        assert bool(system.ok.all())
        d_beta, d_nu = system.solve(r)
        ref_beta, ref_nu = dense_newton_solve(H, d, r)
        torch.testing.assert_close(d_beta, ref_beta, rtol=1e-8, atol=1e-10)
        torch.testing.assert_close(d_nu, ref_nu, rtol=1e-8, atol=1e-10)


def test_kronecker_system_matches_the_dense_kkt_solve():
    X, Y = relu_task(seed=4, S=10, D=25, W=5, batch=2)
    l2 = torch.tensor([0.1, 3.0], dtype=F64).reshape(2, 1, 1)
    K = X @ X.transpose(1, 2)
    H = dual_hessian(X, Y, torch.full_like(Y, 0.2), torch.zeros_like(l2), l2, 1.0)
    for seed in (2, 3):
        d, r = barrier_and_rhs(seed, Y.shape)
        system = KroneckerSystem(class_block(K, l2, 1.0), d, torch.zeros(2, 1, 1, dtype=F64))
        d_beta, d_nu = system.solve(r)
        ref_beta, ref_nu = dense_newton_solve(H, d, r)
        torch.testing.assert_close(d_beta, ref_beta, rtol=1e-8, atol=1e-10)
        torch.testing.assert_close(d_nu, ref_nu, rtol=1e-8, atol=1e-10)


def test_cholesky_solve_by_two_triangular_solves():
    g = torch.Generator().manual_seed(5)
    A = torch.randn(3, 7, 9, generator=g, dtype=F64)
    M, b = A @ A.mT, torch.randn(3, 7, 2, generator=g, dtype=F64)
    L = torch.linalg.cholesky(M)
    torch.testing.assert_close(cholesky_solve(b, L), torch.linalg.solve(M, b))


@pytest.mark.parametrize("capturable", [False, True])
def test_sum_of_inverses_in_both_forms(capturable):
    """The Schur complement of KroneckerSystem: LAPACK's potri and the capture-safe form
    (one triangular solve and one product) against explicit inverses."""
    g = torch.Generator().manual_seed(6)
    A = torch.randn(2, 3, 6, 8, generator=g, dtype=F64)
    M = A @ A.mT + 0.1 * torch.eye(6, dtype=F64)
    ref = torch.linalg.inv(M).sum(1)
    torch.testing.assert_close(sum_of_inverses(torch.linalg.cholesky(M), capturable), ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_lower_gram_and_the_cholesky_that_reads_only_it(device):
    """The Newton matrix is formed in its lower triangle only: that triangle against the
    full product, and the factorisation's contract (it never reads above the diagonal:
    NaN there changes nothing), on each device's solver (LAPACK, cuSOLVER)."""
    g = torch.Generator().manual_seed(5)
    Z = torch.randn(3, 31, 40, generator=g, dtype=F64).to(device)
    full = Z @ Z.mT
    torch.testing.assert_close(lower_gram(Z, F64).tril(), full.tril(), rtol=1e-13, atol=1e-12)
    torch.testing.assert_close(lower_gram(Z.float(), F64).tril(), full.tril(), rtol=1e-5, atol=1e-4)
    base = torch.randn(3, 31, 31, generator=g, dtype=F64).to(device)
    torch.testing.assert_close(lower_gram(Z, F64, out=base.clone()).tril(), (base + full).tril(), rtol=1e-13, atol=1e-12)
    M = full + torch.eye(31, dtype=F64, device=device)
    upper_nan = M.tril() + torch.full_like(M, float("nan")).triu(1)
    torch.testing.assert_close(torch.linalg.cholesky_ex(upper_nan)[0], torch.linalg.cholesky(M), rtol=0, atol=0)


def test_first_columns_against_a_loop():
    g = torch.Generator().manual_seed(6)
    mask = torch.rand(4, 50, generator=g) < torch.tensor([[0.0], [0.1], [0.5], [1.0]])
    for width in (8, 32, 50):
        idx, real = first_columns(mask, width)
        for b in range(4):
            want = mask[b].nonzero()[:, 0][:width]
            assert torch.equal(idx[b, : len(want)], want) and int(real[b].sum()) == len(want)


@pytest.mark.parametrize("paired", [False, True])
def test_a_static_gather_width_gives_the_same_hessian(paired):
    """The sync-free gather to a static width against the gather read on the host and the
    all-D masked form; a width below the count leaves groups out (the caller's contract)."""
    X, Y = relu_task(seed=7, S=12, D=200, W=4, batch=3)
    g = torch.Generator().manual_seed(7)
    beta = torch.softmax(torch.randn(Y.shape, generator=g, dtype=F64), -1)
    l1 = (torch.tensor([0.0, 0.4, 0.4], dtype=F64) * lambda1_all_off(X, Y)).reshape(3, 1, 1)
    l2 = torch.tensor([0.5, 1.0, 2.0], dtype=F64).reshape(3, 1, 1)
    V = X.transpose(1, 2) @ (Y - beta)
    pairs = central_pairs(V.norm(dim=-1), l1, l2, torch.full_like(l2, 1e-3)) if paired else None
    count = int(curvature(V, l1, pairs)[3].sum(-1).max())
    assert 8 < count < 190

    def dense(**kw):
        return hessian_factors(X, Y, beta, l1, l2, 0.5, pairs=pairs, **kw).dense(4)

    want = dense(gather=True)
    torch.testing.assert_close(dense(gather=False), want, rtol=1e-12, atol=1e-12)
    for width in (count, 190):
        torch.testing.assert_close(dense(gather=False, width=width), want, rtol=1e-12, atol=1e-12)
    assert (dense(gather=False, width=count - 5) - want).abs().max() > 1e-3


@pytest.mark.parametrize("kind", ["kronecker", "null_space"])
def test_the_ridge_scales_with_the_hessian_not_the_barrier(kind):
    """Near the end of a solve z / beta spans 1e-10 (free entries) to 1e11 (bound ones). A
    ridge of 1e-14 relative to the largest diagonal entry of the whole matrix would add
    1e-3 to every free entry, far above a face's small curvature; relative to the
    Hessian's it changes the solve by about 1e-14. (Measured against the dense solve:
    1.6e-3 and 1e-2 of the largest entry with the old ridge; now 5e-14, and 1.7e-5 for the
    null-space form, whose rotation mixes entries of a row with d 1e21 apart.)"""
    X, Y = relu_task(seed=5, S=10, D=40, W=4, batch=2)
    bound = torch.rand(Y.shape, generator=torch.Generator().manual_seed(0), dtype=F64) < 0.5
    d = torch.where(bound, 1e11, 1e-10).to(F64)
    r = torch.randn(Y.shape, generator=torch.Generator().manual_seed(1), dtype=F64)
    l2 = torch.full((2, 1, 1), 10.0, dtype=F64)
    beta = torch.full_like(Y, 0.25)
    if kind == "kronecker":
        l1 = torch.zeros_like(l2)
        system = KroneckerSystem(class_block(X @ X.transpose(1, 2), l2, 0.0), d, torch.full_like(l2, 1e-14))
    else:
        l1 = (0.3 * lambda1_all_off(X, Y)).reshape(2, 1, 1)
        system = NullSpaceSystem(hessian_factors(X, Y, beta, l1, l2, 0.0), d, torch.full_like(l2, 1e-14))
    assert bool(system.ok.all())
    d_beta, _ = system.solve(r)
    ref_beta, _ = dense_newton_solve(dual_hessian(X, Y, beta, l1, l2, 0.0), d, r)
    torch.testing.assert_close(d_beta, ref_beta, rtol=0.0, atol=1e-4 * float(ref_beta.abs().max()))
