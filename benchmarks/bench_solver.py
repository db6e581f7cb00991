"""Forward + backward of the group-Lasso SVM head, side by side with the other ways to
get the same solution and gradient, on the same batches (fixed torch.Generator).

    python benchmarks/bench_solver.py --quick          # D=640, 15-shot, relu + gaussian (minutes)
    python benchmarks/bench_solver.py                  # the full grid (long: cvxpylayers)
    python benchmarks/bench_solver.py --features backbone --shots 5 --no-cvx

Features
  gaussian  N(0, 1)
  relu      max(N(0, 1), 0): non-negative like any backbone's last layer; the strong
            common direction makes X X^T badly conditioned
  backbone  random-init MetaOptNet ResNet-12 on random 84x84 images (D = 16,000); the
            ResNet-12 forward of the same episodes is timed too, for the head/encoder ratio

Regimes: lambda1 in {0, active (0.2 x the all-off bound), near (0.9 x the exact
lambda_max, by bisection)}, lambda2 in {0.1, 1, 10, 100}, smoothing in {0, 1}.

Methods (each: solve, logits, cross-entropy on the query labels, backward to the features)
  ipm    the head's default: batched interior-point solver + implicit gradient
  eager  on CUDA, ipm without its CUDA graph (every operation launched from Python)
  compiled  with --compiled: ipm in the sync-free mode with its start, iterations and
         checks fused by torch.compile (compiled=True; compiling, once per shape, is not
         timed, but the first call's wall time is printed), on the GPU where there is one, else on the CPU
  fista  the same head with the first-order solver (cap --fista-max-iter)
  cvx    fewshot_sparse.reference (cvxpylayers + diffcp, Clarabel) on the first task, at
         D = 640 only; ipm is re-timed on that one task for the ratio. Building the layer
         (CVXPY canonicalisation) is not timed
  qpth   MetaOptNet's route for lambda1 = 0: the dual as a QP for qpth's batched
         interior-point QPFunction (rows skipped when qpth is not installed)
"gap" is the largest relative duality gap over the tasks; for cvx and qpth it is
measured against the dual value of a tight ipm solution.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

import torch
import torch.nn.functional as F
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fewshot_sparse.encoders import build_encoder  # noqa: E402
from fewshot_sparse.implicit.group_lasso_svm_grad import group_lasso_svm_fit  # noqa: E402
from fewshot_sparse.solvers.group_lasso_dual import dual_objective, dual_weights, primal_objective  # noqa: E402
from fewshot_sparse.solvers.group_lasso_svm import GroupLassoSVMDual  # noqa: E402

N_WAY, N_QUERY = 5, 15


def timed(fn: Callable[[], object], device: torch.device, repeats: int, mean: bool = False):
    """Median (or with ``mean`` the mean) time in ms over ``repeats`` runs: CUDA wall time
    (after one warm-up run and with synchronisation), or this process's CPU time on the
    CPU, which other jobs on a shared machine do not inflate (it adds up all threads: use
    --threads 1 to compare). ``mean`` warms up on the CPU too."""
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    clock = time.perf_counter if cuda else time.process_time
    if cuda or mean:
        fn()
    times, out = [], None
    for _ in range(repeats):
        sync()
        t0 = clock()
        out = fn()
        sync()
        times.append(1e3 * (clock() - t0))
    return (statistics.fmean if mean else statistics.median)(times), out


# ----------------------------------------------------------------------------- features
def make_batch(seed: int, tasks: int, shot: int, dim: int, features: str, device) -> Dict[str, object]:
    g = torch.Generator().manual_seed(seed)
    s, q = N_WAY * shot, N_WAY * N_QUERY
    labels = torch.stack([torch.randperm(s, generator=g) % N_WAY for _ in range(tasks)])
    query_labels = (torch.arange(q) % N_WAY).repeat(tasks, 1)
    batch = dict(labels=labels, query_labels=query_labels, encoder_ms=None)
    if features == "backbone":
        with torch.random.fork_rng(devices=[]):  # the encoder's init seeded too: the same features each run
            torch.manual_seed(seed)
            enc = build_encoder("resnet12_metaoptnet", in_channels=3).to(device).eval()
        images = torch.rand(tasks * (s + q), 3, 84, 84, generator=g).to(device)
        with torch.no_grad():
            ms, feats = timed(lambda: enc(images), torch.device(device), 1)
        feats = feats.reshape(tasks, s + q, -1).cpu()
        batch.update(support=feats[:, :s].contiguous(), query=feats[:, s:].contiguous(), encoder_ms=ms)
        return batch
    support, query = torch.randn(tasks, s, dim, generator=g), torch.randn(tasks, q, dim, generator=g)
    if features == "relu":
        support, query = support.clamp_min(0), query.clamp_min(0)
    batch.update(support=support, query=query)
    return batch


def all_off_bound(X: Tensor, Y: Tensor) -> Tensor:
    """max_j ||(X^T (Y - beta))_j|| at beta spread over the wrong classes: W* = 0 above it."""
    V = X.transpose(1, 2) @ (Y - (1.0 - Y) / (N_WAY - 1))
    return torch.linalg.vector_norm(V, dim=-1).amax(-1)


def lambda1_max(X: Tensor, Y: Tensor, lambda2: float, smoothing: float, steps: int = 14) -> Tensor:
    """The smallest lambda1 with W* = 0, per task [B], by bisection on the solver's answer."""
    lo, hi = torch.zeros(X.shape[0], dtype=X.dtype), all_off_bound(X, Y)
    solver = GroupLassoSVMDual(tol=1e-7, smoothing=smoothing)
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        beta, _ = solver.run(X, Y, mid, lambda2)
        off = dual_weights(X, Y, beta, mid, lambda2).flatten(1).abs().amax(-1) <= 1e-9
        lo, hi = torch.where(off, lo, mid), torch.where(off, mid, hi)
    return hi


# ------------------------------------------------------------------------------ methods
def loss_backward(logits: Tensor, query_labels: Tensor) -> None:
    F.cross_entropy(logits.reshape(-1, N_WAY), query_labels.reshape(-1)).backward()


def run_ours(batch, l1, l2, s, solver, device, repeats, tasks=None, mean=False):
    """The head's computation (implicit layer, logits, loss, backward) with a per-task
    lambda1 [B] (near lambda_max differs per task)."""
    n = tasks or batch["support"].shape[0]
    q, x, y, qy = (batch[k][:n].to(device) for k in ("query", "support", "labels", "query_labels"))
    Y = F.one_hot(y, N_WAY).to(x.dtype)
    l1 = l1[:n].to(device=device, dtype=x.dtype)

    def fn():
        xg = x.clone().requires_grad_()
        W, _, info = group_lasso_svm_fit(xg, Y, l1, torch.tensor(l2, dtype=x.dtype, device=device), solver)
        loss_backward(q @ W, qy)
        return info

    return timed(fn, torch.device(device), repeats, mean)


def run_cvx(batch, l1, l2, s):
    from fewshot_sparse.reference import GroupLassoSVMReference
    from fewshot_sparse.reference.group_lasso_svm import cached_layer

    x, q = batch["support"][:1].double(), batch["query"][:1].double()
    cached_layer(x.shape[1], x.shape[2], N_WAY)  # canonicalisation: not timed
    ref = GroupLassoSVMReference(float(l1[0]), l2, derivative_mode="lsqr")  # s = 0 only

    def fn():
        xg = x.clone().requires_grad_()
        out = ref(q, xg, batch["labels"][:1], N_WAY)
        loss_backward(out.logits, batch["query_labels"][:1])
        return out.weights.detach()

    return timed(fn, torch.device("cpu"), 1)


def run_qpth(batch, l2, s, repeats):
    from qpth.qp import QPFunction

    x = batch["support"]
    Y = F.one_hot(batch["labels"], N_WAY).to(x.dtype)
    B, S, W = Y.shape
    n = S * W
    eye = torch.eye(n, dtype=x.dtype)
    A = torch.kron(torch.eye(S, dtype=x.dtype), torch.ones(1, W, dtype=x.dtype)).expand(B, S, n)

    def fn():
        xg = x.clone().requires_grad_()
        K = xg @ xg.transpose(1, 2)
        Q = torch.kron(K, torch.eye(W, dtype=x.dtype)) / l2 + (s / l2) * eye  # the dual's Hessian
        y = Y.reshape(B, n, 1)
        p = (y - Q @ y).squeeze(-1)
        beta = QPFunction(verbose=False)(Q, p, -eye.expand(B, n, n), torch.zeros(B, n, dtype=x.dtype), A,
                                         torch.ones(B, S, dtype=x.dtype)).reshape(B, S, W)
        Wt = xg.transpose(1, 2) @ (Y - beta) / l2
        loss_backward(batch["query"] @ Wt, batch["query_labels"])
        return Wt.detach()

    return timed(fn, torch.device("cpu"), repeats)


def certificate_gap(batch, W, beta_star, l1, l2, s) -> float:
    n = W.shape[0]
    X = batch["support"][:n].to(W.dtype)
    Y = F.one_hot(batch["labels"][:n], N_WAY).to(W.dtype)
    p = primal_objective(X, Y, W, l1[:n].to(W.dtype), l2, s)
    d = dual_objective(X, Y, beta_star[:n].to(W.dtype), l1[:n].to(W.dtype), l2, s)
    return float(((p - d) / p.abs().clamp_min(1.0)).max())


def ratio(slow: float, fast: float) -> str:
    r = slow / fast
    return f"{r:.0f}x" if r >= 10 else f"{r:.2g}x"


# --------------------------------------------------------------------------------- grid
class PrintedRows(list):
    """A configuration's rows, each printed as soon as it is measured: a run cut short by a
    time limit (benchmarks/gpu_check.sh boxes every part) keeps the rows it finished."""

    def append(self, row: str) -> None:
        super().append(row)
        print(row, flush=True)


def bench_config(args, batch, feat, shot, l1_kind, l2, s, devices, out: List[str]) -> None:
    x = batch["support"]
    Y = F.one_hot(batch["labels"], N_WAY).to(x.dtype)
    if l1_kind == "0":
        l1 = torch.zeros(x.shape[0], dtype=x.dtype)
    elif l1_kind == "active":
        l1 = 0.2 * all_off_bound(x, Y)
    else:
        l1 = 0.9 * lambda1_max(x, Y, l2, s)
    ipm = GroupLassoSVMDual(tol=args.tol, max_iter=args.max_iter, smoothing=s)
    fista = GroupLassoSVMDual(tol=args.tol, max_iter=args.fista_max_iter, smoothing=s, method="fista")
    tag = f"{feat:<8} {x.shape[-1]:>6} {shot:>4} {l1_kind:<6} {l2:>6g} {s:>3g}"
    for dev in devices:
        ms, info = run_ours(batch, l1, l2, s, ipm, dev, args.repeats)
        cols = [f"ipm/{dev}", f"{ms:9.1f}", f"{int(info.iterations.max()):>5}", f"{float(info.gap.max()):8.1e}",
                f"{int((~info.converged).sum()):>3}"]
        if dev == "cpu":
            ipm_ms = ms
            if batch["encoder_ms"] is not None:
                cols.append(f"head/encoder {ms / batch['encoder_ms']:.3f}")
        out.append(f"{tag} " + " ".join(cols))
        if dev == "cpu" and args.sync_free:  # the GPU's algorithm (static shapes) on the CPU: its flops
            ms_s, info = run_ours(batch, l1, l2, s, dataclasses.replace(ipm, sync_free=True), dev, args.repeats)
            out.append(f"{tag} syncfree/cpu {ms_s:5.1f} {int(info.iterations.max()):>5} {float(info.gap.max()):8.1e} "
                       f"{int((~info.converged).sum()):>3} {ms_s / ms:.2f}x the gathering mode's time")
        if args.compiled and dev == devices[-1]:  # once untimed: the compile (each shape and width)
            fused = dataclasses.replace(ipm, sync_free=True, compiled=True)
            start = time.perf_counter()
            run_ours(batch, l1, l2, s, fused, dev, 1)
            compile_s = time.perf_counter() - start  # wall time: compiling runs on the host
            ms_c, info = run_ours(batch, l1, l2, s, fused, dev, args.repeats)
            out.append(f"{tag} compiled/{dev} {ms_c:6.1f} {int(info.iterations.max()):>5} {float(info.gap.max()):8.1e} "
                       f"{int((~info.converged).sum()):>3} {ratio(ms, ms_c)} faster than ipm/{dev}; "
                       f"first call {compile_s:.0f} s (compiling; less where inductor's disk cache has it)")
        if dev == "cuda":  # the same iterations launched op by op, without the CUDA graph
            ms_e, info = run_ours(batch, l1, l2, s, dataclasses.replace(ipm, cuda_graph=False), dev, args.repeats)
            out.append(f"{tag} eager/cuda {ms_e:8.1f} {int(info.iterations.max()):>5} {float(info.gap.max()):8.1e} "
                       f"{int((~info.converged).sum()):>3} graph {ratio(ms_e, ms)} faster")
    if not args.no_fista:
        ms, info = run_ours(batch, l1, l2, s, fista, "cpu", 1)
        unconv = int((~info.converged).sum())
        out.append(f"{tag} fista/cpu {ms:9.1f} {int(info.iterations.max()):>5} {float(info.gap.max()):8.1e} "
                   f"{unconv:>3} ipm {('>' if unconv else '') + ratio(ms, ipm_ms)} faster")
    beta_star = None
    if (x.shape[-1] <= args.cvx_max_dim and not args.no_cvx) or (l1_kind == "0" and args.qpth):
        beta_star, _ = GroupLassoSVMDual(tol=1e-9, smoothing=s).run(x.double(), Y.double(), l1.double(), l2)
    if x.shape[-1] <= args.cvx_max_dim and not args.no_cvx and s == 0:
        # this CPU runs up to 2x slower for fractions of a second to seconds at a time, and
        # one cvxpylayers solve (seconds) averages over that: so does the mean of 20 of ours
        # (tens of ms each), 10 just before and 10 just after it
        before, _ = run_ours(batch, l1, l2, s, ipm, "cpu", 10, tasks=1, mean=True)
        ms_cvx, W_cvx = run_cvx(batch, l1, l2, s)
        after, info = run_ours(batch, l1, l2, s, ipm, "cpu", 10, tasks=1, mean=True)
        ms_one = (before + after) / 2
        out.append(f"{tag} cvx/cpu  {ms_cvx:9.1f}     - {certificate_gap(batch, W_cvx, beta_star, l1, l2, s):8.1e}"
                   f"   - (1 task; ipm {ms_one:.1f} ms: {ratio(ms_cvx, ms_one)} faster)")
    if l1_kind == "0" and args.qpth and x.shape[1] <= x.shape[2]:
        ms, W_qp = run_qpth(batch, l2, s, 1)
        out.append(f"{tag} qpth/cpu {ms:9.1f}     - {certificate_gap(batch, W_qp, beta_star, l1, l2, s):8.1e}"
                   f"   - ipm {ratio(ms, ipm_ms)} faster")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="D=640 15-shot, relu and gaussian, lambda2 in {1, 10}, smoothing 0, 8 tasks")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where ipm runs: auto = CPU, plus CUDA when available")
    p.add_argument("--features", nargs="+", default=["gaussian", "relu", "backbone"],
                   choices=["gaussian", "relu", "backbone"])
    p.add_argument("--tasks", type=int, default=8)
    p.add_argument("--shots", type=int, nargs="+", default=[1, 5, 15])
    p.add_argument("--dim", type=int, default=640, help="D of the gaussian / relu features")
    p.add_argument("--lambda1", nargs="+", default=["0", "active", "near"], choices=["0", "active", "near"])
    p.add_argument("--lambda2", type=float, nargs="+", default=[0.1, 1.0, 10.0, 100.0])
    p.add_argument("--smoothing", type=float, nargs="+", default=[0.0, 1.0])
    p.add_argument("--tol", type=float, default=1e-4, help="relative duality gap target")
    p.add_argument("--max-iter", type=int, default=100)
    p.add_argument("--fista-max-iter", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cvx-max-dim", type=int, default=640)
    p.add_argument("--no-cvx", action="store_true")
    p.add_argument("--no-fista", action="store_true")
    p.add_argument("--sync-free", action="store_true",
                   help="also time the sync-free mode (the default on GPUs) on the CPU: rows syncfree/cpu")
    p.add_argument("--compiled", action="store_true",
                   help="also time the solver compiled by torch.compile (sync-free): rows compiled/<device>")
    p.add_argument("--float64", action="store_true", help="features in float64 (default float32)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (CPU times add up threads: 1 compares methods fairly)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        args.features, args.shots, args.lambda2, args.smoothing = ["relu", "gaussian"], [15], [1.0, 10.0], [0.0]
        args.repeats = 1
    devices = ["cpu"]
    if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            p.error("--device cuda: no CUDA device")
        devices.append("cuda")
    try:
        import qpth  # noqa: F401

        args.qpth = True
    except ImportError:
        args.qpth = False
        # qpth itself pins numpy < 2, and a plain install then takes cvxpy below what
        # cvxpylayers needs (the reference breaks); it runs on what is installed
        print("qpth not installed: no qpth rows (pip install --no-deps qpth to add them)")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, {'+'.join(devices)}; "
          f"{args.tasks} tasks, {N_WAY}-way, {N_QUERY} queries/class, tol {args.tol:g}, median of {args.repeats} "
          f"({'CPU time of this process' if devices == ['cpu'] else 'CPU time; CUDA wall time'})")
    print(f"{'features':<8} {'D':>6} {'shot':>4} {'l1':<6} {'l2':>6} {'s':>3} method   {'ms fw+bw':>9} "
          f"{'iters':>5} {'max gap':>8} {'unc':>3}  vs ipm")
    dtype = torch.float64 if args.float64 else torch.float32
    for feat, shot in itertools.product(args.features, args.shots):
        batch = make_batch(args.seed, args.tasks, shot, args.dim, feat, devices[-1])
        batch["support"], batch["query"] = batch["support"].to(dtype), batch["query"].to(dtype)
        if batch["encoder_ms"] is not None:
            print(f"# ResNet-12 forward of these {args.tasks} episodes ({shot}-shot): {batch['encoder_ms']:.0f} ms")
        for l1_kind, l2, s in itertools.product(args.lambda1, args.lambda2, args.smoothing):
            bench_config(args, batch, feat, shot, l1_kind, l2, s, devices, PrintedRows())


if __name__ == "__main__":
    main()
