"""Forward + backward time of the group-Lasso SVM head against other ways to get the same
solution and gradient, on the same random batches (fixed torch.Generator).

    python benchmarks/bench_solver.py            # full grid (minutes; cvxpylayers is slow)
    python benchmarks/bench_solver.py --quick    # D=640, 15-shot, two regimes (< 1 min CPU)
    python benchmarks/bench_solver.py --device cuda

Methods (each: solve, logits, cross-entropy on the query labels, backward to the features)
  ours     GroupLassoSVMHead: batched accelerated dual solver + implicit gradient
  pg       plain (non-accelerated) projected gradient on the same dual, written below
           with the package's prox functions, stopped by the same relative-duality-gap
           test (same tolerance, same check period); gradient by the same implicit
           backward, so the ratio measures the solvers
  cvx      fewshot_sparse.reference (cvxpylayers + diffcp, Clarabel, lsqr derivative) on
           the first --cvx-tasks tasks, D=640 only; "ours" is re-timed on the same tasks
           for the ratio. Building the layer (CVXPY canonicalisation, ~20 s at D=640) is
           not timed; Clarabel's solve is most of what is
  qpth     MetaOptNet's route: the lambda1 = 0 dual as a QP for qpth's batched
           interior-point QPFunction (skipped with a message when qpth is not installed)

Features are N(0, 1) by default; ``--features relu`` uses max(N(0, 1), 0), non-negative
like a ReLU backbone's, whose strong common (mean) direction makes the dual much worse
conditioned. "gap" is the largest relative duality gap (P - D) / max(|P|, 1) over the
tasks; for cvx and qpth it is measured with the head's dual certificate (P of their
weights minus the dual value of ours).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fewshot_sparse.heads import GroupLassoSVMHead  # noqa: E402
from fewshot_sparse.implicit.group_lasso_svm_grad import group_lasso_svm_fit  # noqa: E402
from fewshot_sparse.solvers.group_lasso_svm import (  # noqa: E402
    GroupLassoSVMDual,
    dual_objective,
    dual_weights,
    primal_objective,
    squared_spectral_norm,
)
from fewshot_sparse.solvers.info import SolverInfo  # noqa: E402
from fewshot_sparse.solvers.prox import block_soft_threshold, project_rows_to_simplex  # noqa: E402

N_WAY, N_QUERY = 5, 15


# ---------------------------------------------------------------------------- baselines
@dataclass
class PlainProjectedGradient:
    """beta <- proj_simplex_rows(beta - grad f(beta) / L), L = ||X||_2^2 / lambda2: no
    momentum, no Newton steps. Same dual, same gap test as the head's solver. Duck-types
    the solver interface ``group_lasso_svm_fit`` expects (run, smoothing)."""

    tol: float = 1e-4
    max_iter: int = 20_000
    check_every: int = 10
    smoothing: float = 0.0

    def run(self, X, Y, lambda1, lambda2, beta0=None):
        with torch.no_grad():
            X, Y = X.detach(), Y.detach()
            l1, l2 = torch.as_tensor(lambda1).to(X), torch.as_tensor(lambda2).to(X)
            step = l2 / squared_spectral_norm(X).reshape(-1, 1, 1)
            beta = Y.clone() if beta0 is None else beta0.detach().clone()
            done = torch.zeros(X.shape[0], dtype=torch.bool, device=X.device)
            iters = torch.zeros(X.shape[0], dtype=torch.long, device=X.device)
            for k in range(self.max_iter + 1):
                if k % self.check_every == 0 or k == self.max_iter:
                    gap = relative_gap(X, Y, beta, l1, l2)
                    newly = (gap <= self.tol) & ~done
                    iters[newly] = k
                    done |= newly
                    if bool(done.all()) or k == self.max_iter:
                        break
                U = block_soft_threshold(X.transpose(1, 2) @ (Y - beta), l1)
                grad = Y - X @ U / l2
                step_beta = project_rows_to_simplex(beta - step * grad)
                beta = torch.where(done[:, None, None], beta, step_beta)
            iters[~done] = self.max_iter
            p, d = primal_objective(X, Y, dual_weights(X, Y, beta, l1, l2), l1, l2), dual_objective(X, Y, beta, l1, l2)
            gap = (p - d) / p.abs().clamp_min(1.0)
            return beta, SolverInfo(iterations=iters, primal=p, dual=d, gap=gap, converged=gap <= self.tol)


def relative_gap(X, Y, beta, l1, l2) -> Tensor:
    p = primal_objective(X, Y, dual_weights(X, Y, beta, l1, l2), l1, l2)
    return (p - dual_objective(X, Y, beta, l1, l2)) / p.abs().clamp_min(1.0)


def qpth_weights(X: Tensor, Y: Tensor, lambda2: float) -> Tensor:
    """lambda1 = 0 dual as a QP in beta (MetaOptNet's formulation, unsmoothed):
    min 1/(2 lambda2) (Y - beta)^T (K kron I)(Y - beta) + <Y, beta>, beta >= 0, rows sum to 1;
    W = X^T (Y - beta) / lambda2, differentiable through qpth."""
    from qpth.qp import QPFunction

    B, S, W = Y.shape
    n = S * W
    K = X @ X.transpose(1, 2)
    eye_w = torch.eye(W, dtype=X.dtype, device=X.device)
    Q = (K[:, :, None, :, None] * eye_w[None, None, :, None, :]).reshape(B, n, n) / lambda2
    y = Y.reshape(B, n)
    p = -(Q @ y.unsqueeze(-1)).squeeze(-1) + y
    G = -torch.eye(n, dtype=X.dtype, device=X.device).expand(B, n, n)
    h = torch.zeros(B, n, dtype=X.dtype, device=X.device)
    A = torch.kron(torch.eye(S, dtype=X.dtype, device=X.device), torch.ones(1, W, dtype=X.dtype, device=X.device))
    A = A.expand(B, S, n)
    b = torch.ones(B, S, dtype=X.dtype, device=X.device)
    beta = QPFunction(verbose=False)(Q, p, G, h, A, b).reshape(B, S, W)
    return X.transpose(1, 2) @ (Y - beta) / lambda2


# ------------------------------------------------------------------------------- runs
@dataclass
class Row:
    dim: int
    shot: int
    regime: str
    method: str
    device: str
    tasks: int
    ms: float
    iters: Optional[int] = None
    gap: Optional[float] = None
    vs_cvx: Optional[str] = None
    vs_pg: Optional[str] = None


def make_batch(seed: int, n_tasks: int, shot: int, dim: int, features: str):
    g = torch.Generator().manual_seed(seed)
    s = N_WAY * shot
    support = torch.randn(n_tasks, s, dim, generator=g)
    query = torch.randn(n_tasks, N_WAY * N_QUERY, dim, generator=g)
    if features == "relu":
        support, query = support.clamp_min(0), query.clamp_min(0)
    labels = torch.stack([torch.randperm(s, generator=g) % N_WAY for _ in range(n_tasks)])
    query_labels = (torch.arange(N_WAY * N_QUERY) % N_WAY).repeat(n_tasks, 1)
    return query, support, labels, query_labels


def active_lambda1(support: Tensor, labels: Tensor, fraction: float = 0.2) -> float:
    """A lambda1 that switches off part of the features in every task: ``fraction`` of the
    smallest (over tasks) upper bound on the all-off threshold, max_j ||X_j^T (Y - beta)||
    at beta spread evenly over the wrong classes."""
    Y = F.one_hot(labels, N_WAY).to(support.dtype)
    beta = (1.0 - Y) / (N_WAY - 1)
    V = support.transpose(1, 2) @ (Y - beta)
    return fraction * float(torch.linalg.vector_norm(V, dim=-1).amax(-1).min())


def timed(fn: Callable[[], object], device: torch.device, repeats: int):
    """Median wall time in ms over ``repeats`` runs (after one warm-up run on CUDA)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        fn()
    times, out = [], None
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        out = fn()
        sync()
        times.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(times), out


def loss_backward(logits: Tensor, query_labels: Tensor) -> None:
    F.cross_entropy(logits.reshape(-1, N_WAY), query_labels.reshape(-1)).backward()


def run_ours(query, support, labels, query_labels, l1, l2, tol, device, repeats):
    q, s, y, qy = (t.to(device) for t in (query, support, labels, query_labels))
    head = GroupLassoSVMHead(lambda1=l1, lambda2=l2, tol=tol, max_iter=20_000)

    def fn():
        sg = s.clone().requires_grad_()
        out = head(q, sg, y, N_WAY)
        loss_backward(out.logits, qy)
        return out

    return timed(fn, device, repeats)


def run_pg(query, support, labels, query_labels, l1, l2, tol, max_iter, repeats):
    Y = F.one_hot(labels, N_WAY).to(support.dtype)
    solver = PlainProjectedGradient(tol=tol, max_iter=max_iter)

    def fn():
        sg = support.clone().requires_grad_()
        W, _, info = group_lasso_svm_fit(sg, Y, l1, l2, solver)
        loss_backward(query @ W, query_labels)
        return info

    return timed(fn, torch.device("cpu"), repeats)


def run_cvx(query, support, labels, query_labels, l1, l2):
    from fewshot_sparse.reference import GroupLassoSVMReference
    from fewshot_sparse.reference.group_lasso_svm import cached_layer

    cached_layer(support.shape[1], support.shape[2], N_WAY)  # canonicalisation (~20 s) not timed
    ref = GroupLassoSVMReference(l1, l2, derivative_mode="lsqr")
    s64, q64 = support.double(), query.double()

    def fn():
        sg = s64.clone().requires_grad_()
        out = ref(q64, sg, labels, N_WAY)
        loss_backward(out.logits, query_labels)
        return out.weights.detach()

    return timed(fn, torch.device("cpu"), 1)


def run_qpth(query, support, labels, query_labels, l2, repeats):
    Y = F.one_hot(labels, N_WAY).to(support.dtype)

    def fn():
        sg = support.clone().requires_grad_()
        W = qpth_weights(sg, Y, l2)
        loss_backward(query @ W, query_labels)
        return W.detach()

    return timed(fn, torch.device("cpu"), repeats)


def certificate_gap(support, labels, W, beta, l1, l2) -> float:
    """Relative gap of weights W against the dual value of ``beta`` (the head's solution)."""
    X, Wd = support.to(W.dtype), W
    Y = F.one_hot(labels, N_WAY).to(W.dtype)
    p = primal_objective(X, Y, Wd, l1, l2)
    d = dual_objective(X, Y, beta.to(W.dtype), l1, l2)
    return float(((p - d) / p.abs().clamp_min(1.0)).max())


def ratio(slow: float, fast: float) -> str:
    return f"{slow / fast:.0f}x" if slow / fast >= 10 else f"{slow / fast:.1f}x"


def bench_config(args, dim, shot, regime, devices, rows: List[Row]):
    query, support, labels, query_labels = make_batch(args.seed, args.tasks, shot, dim, args.features)
    l1 = 0.0 if regime[0] == "0" else active_lambda1(support, labels)
    l2 = float(regime[1])
    name = f"l1={'0' if l1 == 0 else f'{l1:.3g}'},l2={l2:g}"
    base = dict(dim=dim, shot=shot, regime=name)

    ours_cpu = None
    for dev in devices:
        ms, out = run_ours(query, support, labels, query_labels, l1, l2, args.tol, dev, args.repeats)
        info = out.info
        row = Row(**base, method="ours", device=dev.type, tasks=args.tasks, ms=ms,
                  iters=int(info.iterations.max()), gap=float(info.gap.max()))
        rows.append(row)
        if dev.type == "cpu":
            ours_cpu = row

    # a tight float64 dual solution: the certificate for the gaps of cvx and qpth
    Y64 = F.one_hot(labels, N_WAY).double()
    beta_star, _ = GroupLassoSVMDual(tol=1e-9, max_iter=100_000).run(support.double(), Y64, l1, l2)

    if not args.no_pg:
        ms, info = run_pg(query, support, labels, query_labels, l1, l2, args.tol, args.pg_max_iter, args.repeats)
        reached = bool(info.converged.all())
        rows.append(Row(**base, method="pg" + ("" if reached else " (cap)"), device="cpu", tasks=args.tasks,
                        ms=ms, iters=int(info.iterations.max()), gap=float(info.gap.max())))
        if ours_cpu is not None:
            ours_cpu.vs_pg = ("" if reached else ">") + ratio(ms, ours_cpu.ms)

    if dim in args.cvx_dims and shot in args.cvx_shots and args.cvx_tasks > 0:
        n = args.cvx_tasks
        sub = (query[:n], support[:n], labels[:n], query_labels[:n])
        ms_cvx, W_cvx = run_cvx(*sub, l1, l2)
        ms_o, out_o = run_ours(*sub, l1, l2, args.tol, torch.device("cpu"), args.repeats)
        rows.append(Row(**base, method="cvx", device="cpu", tasks=n, ms=ms_cvx,
                        gap=certificate_gap(support[:n], labels[:n], W_cvx, beta_star[:n], l1, l2)))
        rows.append(Row(**base, method="ours", device="cpu", tasks=n, ms=ms_o,
                        iters=int(out_o.info.iterations.max()), gap=float(out_o.info.gap.max()),
                        vs_cvx=ratio(ms_cvx, ms_o)))

    if l1 == 0 and args.qpth and shot * N_WAY <= dim:
        ms, W_qp = run_qpth(query, support, labels, query_labels, l2, args.repeats)
        rows.append(Row(**base, method="qpth", device="cpu", tasks=args.tasks, ms=ms,
                        gap=certificate_gap(support, labels, W_qp, beta_star, l1, l2)))
        if ours_cpu is not None:
            ours_cpu.vs_pg = (ours_cpu.vs_pg or "") + f" qpth:{ratio(ms, ours_cpu.ms)}"


def print_table(rows: List[Row]) -> None:
    head = f"{'D':>6} {'shot':>4} {'regime':<18} {'method':<10} {'dev':<4} {'B':>2} {'time ms':>10} " \
           f"{'iters':>6} {'gap':>8}  {'vs cvx':>7}  vs pg / qpth"
    print(head)
    print("-" * len(head))
    for r in rows:
        iters = "-" if r.iters is None else str(r.iters)
        gap = "-" if r.gap is None else f"{r.gap:.1e}"
        print(f"{r.dim:>6} {r.shot:>4} {r.regime:<18} {r.method:<10} {r.device:<4} {r.tasks:>2} "
              f"{r.ms:>10.1f} {iters:>6} {gap:>8}  {r.vs_cvx or '':>7}  {r.vs_pg or ''}")
    sys.stdout.flush()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="D=640, 15-shot, two regimes (< 1 min CPU)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where 'ours' runs: auto = CPU, plus CUDA when available")
    p.add_argument("--tasks", type=int, default=8)
    p.add_argument("--shots", type=int, nargs="+", default=[1, 5, 15])
    p.add_argument("--dims", type=int, nargs="+", default=[640, 16000])
    p.add_argument("--regimes", nargs="+", default=["0:1", "0:10", "a:1", "a:10"],
                   help="lambda1:lambda2 pairs, lambda1 '0' or 'a' (active: part of the features off)")
    p.add_argument("--tol", type=float, default=1e-4, help="relative duality gap target")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--features", default="gaussian", choices=["gaussian", "relu"])
    p.add_argument("--cvx-tasks", type=int, default=1)
    p.add_argument("--cvx-dims", type=int, nargs="+", default=[640])
    p.add_argument("--cvx-shots", type=int, nargs="+", default=[1, 5, 15])
    p.add_argument("--pg-max-iter", type=int, default=20_000)
    p.add_argument("--no-pg", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (0: torch's default). Use 1 on a loaded machine: "
                        "oversubscribed OpenMP threads can slow small kernels 50x")
    args = p.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.dims, args.shots, args.regimes = [640], [15], ["0:10", "a:10"]
        args.repeats, args.cvx_shots, args.pg_max_iter = 1, [15], 2_000
    args.regimes = [tuple(r.split(":")) for r in args.regimes]

    devices = []
    if args.device in ("auto", "cpu"):
        devices.append(torch.device("cpu"))
    if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            p.error("--device cuda: no CUDA device")
        devices.append(torch.device("cuda"))
    try:
        import qpth  # noqa: F401

        args.qpth = True
    except ImportError:
        args.qpth = False
        print("qpth not installed: skipping the qpth rows (pip install qpth to add them)")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
          f"{', '.join(d.type for d in devices)}; {args.tasks} tasks, {N_WAY}-way, {N_QUERY} queries/class, "
          f"{args.features} features, tol {args.tol:g}, median of {args.repeats}")

    rows: List[Row] = []
    for dim in args.dims:
        for shot in args.shots:
            for regime in args.regimes:
                bench_config(args, dim, shot, regime, devices, rows)
    print_table(rows)


if __name__ == "__main__":
    main()
