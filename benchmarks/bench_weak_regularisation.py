"""Iterations of the interior-point solver as lambda2 falls against ||x||^2 (weak
regularisation), float32 and float64 features side by side (docs/benchmarks.md, "Weak
regularisation"; docs/math.md, 6, "Dtypes").

    python benchmarks/bench_weak_regularisation.py [--lambda2 0.1 0.03 0.01 0.003 0.001] [--quick]

8 tasks of 5-way 15-shot, D = 640 (bench_solver.py's seeded ReLU and Gaussian features),
lambda1 = 0 and 0.2 x the all-off bound, tol 1e-4, max_iter 100. Prints the worst task's
iterations, the unconverged tasks, the largest gap and the CPU time of each solve.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from bench_solver import all_off_bound, make_batch
from fewshot_sparse.solvers.group_lasso_dual import needs_float64
from fewshot_sparse.solvers.group_lasso_svm import GroupLassoSVMDual


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lambda2", type=float, nargs="+", default=[0.1, 0.03, 0.01, 0.003, 0.001])
    parser.add_argument("--tol", type=float, default=1e-4)
    parser.add_argument("--max-iter", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="lambda2 = 0.01 only (float32 promoted there)")
    args = parser.parse_args(argv)
    if args.quick:
        args.lambda2 = [0.01]
    torch.set_num_threads(1)
    solver = GroupLassoSVMDual(tol=args.tol, max_iter=args.max_iter)
    print(f"8 tasks, 5-way 15-shot, D = 640, tol {args.tol:g}; worst task: iterations, unconverged, gap, CPU s")
    for feat in ("relu", "gaussian"):
        batch = make_batch(0, 8, 15, 640, feat, "cpu")
        X, Y = batch["support"], F.one_hot(batch["labels"], 5).float()
        sq = float((X * X).sum(-1).mean())
        for l2 in args.lambda2:
            for kind, l1 in (("0", torch.zeros(8)), ("active", 0.2 * all_off_bound(X, Y))):
                cells = []
                for dtype in (torch.float32, torch.float64):
                    t = time.process_time()
                    _, info = solver.run(X.to(dtype), Y.to(dtype), l1.to(dtype), l2)
                    cells.append(f"{str(dtype)[6:]}: {int(info.iterations.max()):3d} it, "
                                 f"{int((~info.converged).sum())}/8 unc, gap {float(info.gap.max()):.1e}, "
                                 f"{time.process_time() - t:4.1f} s")
                promoted = "float64 inside" if needs_float64(X, l2, args.tol) else ""
                print(f"{feat:8s} lambda2 {l2:<6g} lambda2/|x|^2 {l2 / sq:.1e} lambda1 {kind:6s} | "
                      + " | ".join(cells) + f" {promoted}", flush=True)


if __name__ == "__main__":
    main()
