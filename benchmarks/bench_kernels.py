"""Tensor operations per interior-point iteration: what a GPU launches, counted on the CPU
(docs/benchmarks.md, "Fewer kernels an iteration").

    python benchmarks/bench_kernels.py [--quick] [--features relu gaussian backbone] [--shots 1 5 15]

On a GPU one iteration of the group-Lasso head is a few hundred small kernels, each a
few microseconds however little it computes (more launched one by one, less inside a CUDA
graph), so that their count, more than the flops, is expected to set the GPU time of a
solve at these sizes (unmeasured here: no GPU lent). This script counts them for both modes of the solver (``gather``,
the CPU default; ``sync-free``, the GPU default, which the CUDA graph captures) by
running each solve under a dispatch hook: every ATen operation that is not a view
(reshape, transpose, select, ...) or a host-side scalar counts once, the convergence
check between iterations included. 8 tasks, 5-way, float32 features, tol 1e-4,
lambda2 = 1, s = 0; lambda1 = 0, "active" (0.2 x the all-off bound) and "near"
(0.9 lambda_max), as in bench_solver.py. Prints operations per iteration and the
iterations (or, where the start meets the tolerance, the operations in all): a few
seconds a row; backbone features first run the ResNet-12 forward of the episodes, a few
minutes on a CPU. ``--quick``: ReLU features, 15-shot. The last two columns are the
operations of the sync-free solver's start (once a solve) and of one of its iterations
(the Newton system to the next point, without the check between iterations), plain ->
compiled by torch.compile (``compiled=True``, solvers/compiled.py): counted with the
profiler inside the compiled regions, with the
"eager" backend (every plain operation) and with inductor (the kernels it generates plus
the library calls it keeps: products, factorisations). Inductor fuses for the CPU here;
its GPU (Triton) fusion may split a few more kernels. Compiling takes a minute or so a
row the first time. The last column counts a whole forward + backward of the head
(fit, a linear loss of W, backward to the features), plain -> compiled, with the part
launched outside the compiled regions (one by one from Python on a GPU) in brackets. ``--cuda`` (a GPU machine; benchmarks/gpu_check.sh runs it) also
times each solve on CUDA with and without the CUDA graph and divides by its kernels: the
cost of one kernel there, which the counts above are meant to stand for; and times the
compiled iteration with the graph.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections import Counter
from pathlib import Path

import torch
import torch._inductor.config
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_solver import N_WAY, all_off_bound, lambda1_max, make_batch, timed  # noqa: E402
from fewshot_sparse.implicit.group_lasso_svm_grad import group_lasso_svm_fit  # noqa: E402
from fewshot_sparse.solvers import compiled as compiled_solver  # noqa: E402
from fewshot_sparse.solvers.group_lasso_ipm import InteriorPointSolver  # noqa: E402
from fewshot_sparse.solvers.group_lasso_svm import GroupLassoSVMDual  # noqa: E402

# no kernel: views of the same storage, and scalars made or read on the host
NOT_KERNELS = {
    "view", "_unsafe_view", "reshape", "_reshape_alias", "transpose", "t", "permute", "unsqueeze", "squeeze",
    "select", "slice", "expand", "diagonal", "as_strided", "alias", "detach", "unbind", "split",
    "split_with_sizes", "lift_fresh", "scalar_tensor", "_local_scalar_dense",
}
# seen by the profiler, not kernels: allocation, host-side queries
NOT_LAUNCHES = NOT_KERNELS | {"empty", "empty_strided", "empty_like", "resolve_conj", "resolve_neg", "is_nonzero",
                              "item", "result_type"}


class KernelCount(TorchDispatchMode):
    """Counts the operations dispatched while active, by name."""

    def __init__(self):
        super().__init__()
        self.ops: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name not in NOT_KERNELS:
            self.ops[name] += 1
        return func(*args, **(kwargs or {}))


def counted(X, Y, l1, l2: float, sync_free: bool):
    """(operations in all, iterations of the slowest task) of one solve, uncaptured."""
    solver = InteriorPointSolver(tol=1e-4, sync_free=sync_free, cuda_graph=False)
    with KernelCount() as counter:
        _, info = solver.run(X, Y, l1, l2)
    return sum(counter.ops.values()), int(info.iterations.max())


def count(X, Y, l1, l2: float, sync_free: bool) -> str:
    """"operations per iteration x iterations of the slowest task" of one solve (or the
    operations in all where the start already meets the tolerance)."""
    total, iterations = counted(X, Y, l1, l2, sync_free)
    return f"{total / iterations:7.0f} x {iterations:>3}" if iterations else f"{total} at the start"


def compiled_operations(X, Y, l1, l2: float) -> list:
    """["plain -> compiled" for the start, the same for one iteration]: the operations
    counted inside each compiled region, with torch.compile's "eager" backend and with
    inductor (the start runs once a solve, the iteration once an iteration)."""
    counts = []
    for backend in ("eager", "inductor"):
        compiled_solver.BACKEND = backend
        solver = InteriorPointSolver(tol=1e-4, sync_free=True, cuda_graph=False, compiled=True)
        solver.run(X, Y, l1, l2)  # compiles
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            solver.run(X, Y, l1, l2)
        regions = _per_call(prof.events())  # (no iteration where the start meets tol)
        counts.append([regions.get("compiled interior_start"), regions.get("compiled advance")])
    compiled_solver.BACKEND = "inductor"
    return [f"{plain:5.0f} -> {fused:3.0f}" if fused is not None else "-" for plain, fused in zip(*counts)]


def head_launches(X, Y, l1, l2: float) -> str:
    """"plain -> compiled (outside the compiled regions)": the operations one forward +
    backward of the head launches (group_lasso_svm_fit, the sync-free solver, a linear
    loss of W, backward to X), plain and compiled, the same count as ``_per_call``."""
    cost = torch.randn(X.shape[0], X.shape[-1], N_WAY, generator=torch.Generator().manual_seed(0)).to(X.dtype)
    totals = []
    for compiled in (False, True):
        solver = GroupLassoSVMDual(tol=1e-4, sync_free=True, cuda_graph=False, compiled=compiled)

        def forward_backward():
            x = X.clone().requires_grad_()
            W, _, _ = group_lasso_svm_fit(x, Y, l1, l2, solver)
            (W * cost).sum().backward()

        forward_backward()  # compiles
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            forward_backward()
        totals.append(_launches(prof.events()))
    (_, plain), (inside, outside) = totals  # plain: nothing inside a compiled region
    return f"{plain:5d} -> {inside + outside:4d} ({outside})"


def _launches(events):
    """(operations inside compiled regions, operations outside them) among ``events``."""
    inside = outside = 0
    for e in events:
        ancestors = _ancestors(e)
        if _launched(e, ancestors):
            if any(a.startswith("compiled ") for a in ancestors):
                inside += 1
            else:
                outside += 1
    return inside, outside


def _ancestors(e) -> list:
    names, parent = [], e.cpu_parent
    while parent is not None:
        names.append(parent.name)
        parent = parent.cpu_parent
    return names


def _launched(e, ancestors) -> bool:
    """Whether a profiler event is an operation launched: a generated kernel or an
    outermost ATen call, views and allocations not counted (nor an ``aten::to`` /
    ``contiguous`` that changes nothing)."""
    if any(_is_operation(a) for a in ancestors):
        return False
    op = e.name[len("aten::"):]
    return _is_generated(e.name) or (e.name.startswith("aten::") and op not in NOT_LAUNCHES and not (
        op in ("to", "contiguous") and not any(c.name.startswith("aten::") for c in e.cpu_children)))


def _per_call(events) -> dict:
    """{"compiled <function>": operations launched per call} (solvers/compiled.py labels
    each call). Operations: generated kernels (cpp_fused_*, triton_*) and the outermost
    ATen calls, views and allocations not counted (nor an ``aten::to`` / ``contiguous``
    that changes nothing)."""
    ops, calls = Counter(), Counter()
    for e in events:
        if e.name.startswith("compiled "):
            calls[e.name] += 1
            continue
        ancestors = _ancestors(e)
        label = next((a for a in ancestors if a.startswith("compiled ")), None)
        if label is not None and _launched(e, ancestors):
            ops[label] += 1
    return {label: ops[label] / n for label, n in calls.items()}


def _is_generated(name: str) -> bool:
    return "cpp_fused" in name or "triton_" in name


def _is_operation(name: str) -> bool:
    return name.startswith("aten::") or _is_generated(name)


def per_kernel_on_cuda(X, Y, l1, l2: float) -> str:
    """The solve on CUDA (sync-free, its default), timed with the CUDA graph and without
    it, each divided by the operations it launches: what one kernel costs there."""
    device = torch.device("cuda")
    X, Y, l1 = X.to(device), Y.to(device), l1.to(device)
    total, _ = counted(X, Y, l1, l2, sync_free=True)
    cells = []
    for graph in (True, False):
        solver = InteriorPointSolver(tol=1e-4, cuda_graph=graph)
        ms, _ = timed(lambda: solver.run(X, Y, l1, l2), device, 5)
        cells.append(f"{'graph' if graph else 'eager'} {ms:6.2f} ms, {1e3 * ms / total:5.2f} us/kernel")
    solver = InteriorPointSolver(tol=1e-4, compiled=True)
    solver.run(X, Y, l1, l2)  # compiles
    ms, _ = timed(lambda: solver.run(X, Y, l1, l2), device, 5)
    return f"cuda: {total} kernels; " + "; ".join(cells) + f"; graph + compiled {ms:6.2f} ms"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="ReLU features, 15-shot")
    parser.add_argument("--features", nargs="+", default=["relu", "gaussian"], choices=["gaussian", "relu", "backbone"])
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 5, 15])
    parser.add_argument("--dim", type=int, default=640, help="D of the gaussian / relu features")
    parser.add_argument("--lambda2", type=float, default=1.0)
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--no-step-count", action="store_true",
                        help="skip the last three columns (they compile for the CPU: a minute or so a row)")
    parser.add_argument("--cuda", action="store_true",
                        help="also time each sync-free solve on CUDA, with and without the CUDA graph, per kernel")
    args = parser.parse_args(argv)
    if args.cuda and not torch.cuda.is_available():
        parser.error("--cuda: no CUDA device")
    if args.quick:
        args.features, args.shots = ["relu"], [15]
    torch.set_num_threads(1)
    torch._inductor.config.cpp.enable_kernel_profile = True  # each generated CPU kernel a profiler event
    print(f"torch {torch.__version__}; {args.tasks} tasks, {N_WAY}-way, lambda2 {args.lambda2:g}, s = 0, tol 1e-4; "
          "operations per iteration (views and host scalars not counted)")
    print(f"{'features':<8} {'D':>6} {'shot':>4} {'l1':<6} {'gather':>14} {'sync-free':>14} {'start: compiled':>15} "
          f"{'step: compiled':>15} {'head fw+bw: compiled (eager)':>28}")
    for feat, shot in itertools.product(args.features, args.shots):
        batch = make_batch(0, args.tasks, shot, args.dim, feat, "cpu")
        X = batch["support"]
        Y = F.one_hot(batch["labels"], N_WAY).to(X.dtype)
        lambdas = {"0": torch.zeros(X.shape[0]), "active": 0.2 * all_off_bound(X, Y),
                   "near": 0.9 * lambda1_max(X, Y, args.lambda2, 0.0)}
        for kind, l1 in lambdas.items():
            cells = [count(X, Y, l1.to(X.dtype), args.lambda2, sync_free) for sync_free in (False, True)]
            if args.no_step_count:
                cells += ["-", "-", "-"]
            else:
                cells += compiled_operations(X, Y, l1.to(X.dtype), args.lambda2)
                cells.append(head_launches(X, Y, l1.to(X.dtype), args.lambda2))
            print(f"{feat:<8} {X.shape[-1]:>6} {shot:>4} {kind:<6} {cells[0]:>14} {cells[1]:>14} {cells[2]:>15} "
                  f"{cells[3]:>15} {cells[4]:>28}", flush=True)
            if args.cuda:
                print(f"{'':<26} {per_kernel_on_cuda(X, Y, l1.to(X.dtype), args.lambda2)}", flush=True)


if __name__ == "__main__":
    main()
