"""Iterations of the interior-point solver on degenerate supports: feature columns repeated,
two identical support points with different labels (a non-unique dual), fewer features
than points (docs/benchmarks.md, "A non-unique dual"; docs/math.md, 6, "Curvature
gathered" and "Ridge").

    python benchmarks/bench_degenerate.py [--seeds 10] [--quick]

One task per seed: S = 25, 5-way, ReLU features (torch.randn, seed 91 + k, float64), the
first D / copies columns repeated `copies` times; with "dup" support point 1 is set equal
to point 0 (labels differ in most seeds). lambda1 = 0.9 x lambda_max (the CVXPY SOCP of
tests/solvers/cvx_glsvm.py), s = 0, tol 1e-6, max_iter 200. Prints each task's
iterations ("!" where unconverged), their sum and the largest gap per row.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "solvers"))  # the independent CVXPY lambda_max

from cvx_glsvm import lambda1_max  # noqa: E402
from fewshot_sparse.solvers.group_lasso_svm import GroupLassoSVMDual  # noqa: E402

ROWS = [(30, 1), (60, 2), (300, 10), (20, 1), (40, 1)]  # (D, copies of each column)


def task(seed: int, D: int, copies: int, duplicated_point: bool):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(25, D, generator=g, dtype=torch.float64)
    X = X[:, : D // copies].clamp_min(0.0).repeat(1, copies) if copies > 1 else X.clamp_min(0.0)
    y = torch.randperm(25, generator=g) % 5
    if duplicated_point:
        X[1] = X[0]
    return X, F.one_hot(y, 5).to(X.dtype)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--lambda2", type=float, nargs="+", default=[1e-3, 0.1])
    parser.add_argument("--quick", action="store_true", help="the 10-copy rows with the duplicated point, 2 seeds")
    args = parser.parse_args(argv)
    rows = [(D, c, dup) for D, c in ROWS for dup in (False, True)]
    if args.quick:
        rows, args.seeds = [(300, 10, True)], 2
    torch.set_num_threads(1)
    solver = GroupLassoSVMDual(tol=1e-6, max_iter=200)
    total = unconverged = 0
    start = time.process_time()
    print("S = 25, 5-way, lambda1 = 0.9 lambda_max, s = 0, tol 1e-6, float64; iterations per seed")
    for D, copies, dup in rows:
        for l2 in args.lambda2:
            its, worst = [], 0.0
            for k in range(args.seeds):
                X, Y = task(91 + k, D, copies, dup)
                l1 = 0.9 * lambda1_max(X.numpy(), Y.numpy())
                _, info = solver.run(X[None], Y[None], l1, l2)
                its.append(f"{int(info.iterations[0])}{'' if bool(info.converged[0]) else '!'}")
                total += int(info.iterations[0])
                unconverged += int(not bool(info.converged[0]))
                worst = max(worst, float(info.gap[0]))
            print(f"D {D:3d} copies {copies:2d} {'dup' if dup else '   '} lambda2 {l2:<6g} | "
                  f"{' '.join(its)} | worst gap {worst:.1e}", flush=True)
    print(f"sum {total} iterations, {unconverged} unconverged, {time.process_time() - start:.0f} s CPU")


if __name__ == "__main__":
    main()
