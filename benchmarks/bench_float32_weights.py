"""How far from optimal the weights of a float32 fit are, against what the fit reports
(docs/benchmarks.md, "The weights a float32 fit returns"; docs/math.md, 6, "Dtypes").

    python benchmarks/bench_float32_weights.py [--shift 0 0.5 4] [--lambda2 0.1 1 10] [--quick]

8 tasks of 5-way 5-shot and 15-shot, D = 2000 (bench_solver.py's seeded ReLU features plus
a constant shift, a backbone's common mean), lambda1 = 0 (the MetaOptNet head) and 0.2 x
the all-off bound, tol 1e-4. For each: the gap the fit reports and the true relative gap
of the W it returns, P(W) - D(beta*) over max(|P|, 1) in float64 with beta* from a
float64 solve at 1e-11, both the worst over the tasks, and the fit's CPU time with the
backward (one thread).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from bench_solver import all_off_bound, make_batch
from fewshot_sparse.implicit.group_lasso_svm_grad import group_lasso_svm_fit
from fewshot_sparse.solvers.group_lasso_dual import dual_objective, primal_objective
from fewshot_sparse.solvers.group_lasso_svm import GroupLassoSVMDual


def true_gap(X64, Y64, W, l1, l2, reference) -> float:
    """The largest relative gap of W (any dtype) against the float64 reference beta."""
    primal = primal_objective(X64, Y64, W.detach().double(), l1, l2, 0.0)
    dual = dual_objective(X64, Y64, reference, l1, l2, 0.0)
    return float(((primal - dual) / primal.abs().clamp_min(1.0)).max())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shift", type=float, nargs="+", default=[0.0, 0.5, 4.0])
    parser.add_argument("--lambda2", type=float, nargs="+", default=[0.1, 1.0, 10.0])
    parser.add_argument("--shots", type=int, nargs="+", default=[5, 15])
    parser.add_argument("--tol", type=float, default=1e-4)
    parser.add_argument("--quick", action="store_true", help="shift 4, lambda2 = 1, 5-shot only")
    args = parser.parse_args(argv)
    if args.quick:
        args.shift, args.lambda2, args.shots = [4.0], [1.0], [5]
    torch.set_num_threads(1)
    solver, reference_solver = GroupLassoSVMDual(tol=args.tol), GroupLassoSVMDual(tol=1e-11)
    print(f"8 tasks, 5-way, D = 2000, ReLU + shift, tol {args.tol:g}; worst task: reported gap, true gap of W, CPU ms")
    print(f"{'shot':>4} {'shift':>5} {'lambda1':>7} {'lambda2':>7} {'reported':>9} {'true':>9} {'ms':>7}")
    for shot in args.shots:
        batch = make_batch(0, 8, shot, 2000, "relu", "cpu")
        for shift in args.shift:
            X = batch["support"] + shift
            Y = F.one_hot(batch["labels"], 5).float()
            X64, Y64 = X.double(), Y.double()
            for kind in ("0", "active"):
                l1 = torch.zeros(X.shape[0]) if kind == "0" else 0.2 * all_off_bound(X, Y)
                for l2 in args.lambda2:
                    reference, _ = reference_solver.run(X64, Y64, l1.double(), l2)
                    x = X.clone().requires_grad_()
                    start = time.process_time()
                    W, _, info = group_lasso_svm_fit(x, Y, l1, l2, solver)
                    W.sum().backward()
                    ms = 1e3 * (time.process_time() - start)
                    truth = true_gap(X64, Y64, W, l1.double(), l2, reference)
                    print(f"{shot:>4} {shift:>5g} {kind:>7} {l2:>7g} {float(info.gap.max()):>9.1e} {truth:>9.1e} {ms:>7.0f}", flush=True)


if __name__ == "__main__":
    main()
