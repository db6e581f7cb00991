"""The group-Lasso SVM dual solver as one set of settings: which algorithm, to what gap.

``GroupLassoSVMDual`` is what heads, recipes and the implicit gradient hold. It picks

    method "ipm"    the batched primal-dual interior-point method (group_lasso_ipm.py):
                    4-40 Newton iterations whatever the conditioning of the features;
                    the default (docs/math.md, 6 says why)
    method "fista"  accelerated projected gradient (group_lasso_fista.py): the plain
                    first-order twin, cheap per iteration, conditioning-bound

Both stop each task on its own relative duality gap and report it in SolverInfo.
The problem itself (objective, gradient, gap) lives in group_lasso_dual.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple, Union

from torch import Tensor

from fewshot_sparse.solvers.autocast import autocast_off
from fewshot_sparse.solvers.group_lasso_dual import Scalar
from fewshot_sparse.solvers.group_lasso_fista import FistaSolver
from fewshot_sparse.solvers.group_lasso_ipm import InteriorPointSolver
from fewshot_sparse.solvers.info import SolverInfo

METHODS = ("ipm", "fista")


@dataclass(frozen=True)
class GroupLassoSVMDual:
    """Solver settings (no state on ``self``).

    tol          relative duality gap target (P - D) / max(|P|, 1), per task
    max_iter     iteration cap (Newton iterations for "ipm", gradient steps for "fista");
                 a task that hits it is reported ``converged = False`` with its true gap
    smoothing    s >= 0, the (s / (2 lambda2)) ||beta - Y||^2 dual term (s = 1, lambda1 = 0
                 is MetaOptNet's SVM-CS QP with its +I stabiliser, C = 1 / lambda2)
    method       "ipm" (default) or "fista"
    check_every  iterations between convergence checks (each is one host sync); default
                 1 for "ipm", 10 for "fista"
    polish       face-Newton steps for tight tolerances (docs/math.md, 6): crossover from
                 the interior ("ipm", below a gap of 1e-7) or polish ("fista", below 1e-5)
    sync_free    "ipm": no host synchronisation between checks (None: off the CPU only)
    cuda_graph   "ipm": each iteration replayed as one captured CUDA graph (None: on CUDA in
                 the sync-free mode; True elsewhere runs its uncaptured twin)
    compiled     "ipm": its set-up, start, iterations and checks fused by torch.compile
                 (sync-free mode; compiles once per shape, tens of seconds: for long runs
                 of one shape); also the fit's float32 certificate and the implicit
                 gradient's pullbacks and adjoint solve (any method)
    """

    tol: float = 1e-4
    max_iter: int = 100
    smoothing: float = 0.0
    method: str = "ipm"
    check_every: Optional[int] = None
    polish: bool = True
    sync_free: Optional[bool] = None
    cuda_graph: Optional[bool] = None
    compiled: bool = False

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"solver method must be one of {METHODS}, got {self.method!r}")
        self.algorithm()  # refuses bad numbers now, not at the first solve

    def algorithm(self) -> Union[InteriorPointSolver, FistaSolver]:
        common = dict(tol=self.tol, max_iter=self.max_iter, smoothing=self.smoothing)
        every = self.check_every
        if self.method == "ipm":
            return InteriorPointSolver(
                **common, check_every=1 if every is None else every, polish_below=1e-7 if self.polish else 0.0,
                sync_free=self.sync_free, cuda_graph=self.cuda_graph, compiled=self.compiled,
            )
        return FistaSolver(**common, check_every=10 if every is None else every, polish=self.polish)

    def run(
        self, X: Tensor, Y: Tensor, lambda1: Scalar, lambda2: Scalar, beta0: Optional[Tensor] = None
    ) -> Tuple[Tensor, SolverInfo]:
        """Solve B tasks at once: X [B, S, D], Y [B, S, W] one-hot, lambda1 / lambda2 of
        shape [] or [B], beta0 an optional warm start. Returns (beta [B, S, W], SolverInfo);
        beta in float64 from "ipm" (its iterates' dtype: float32 would cost W its digits,
        docs/math.md 6, "Dtypes"), in X's dtype from "fista". No autograd:
        fewshot_sparse.implicit differentiates the solution. Autocast is off inside
        (autocast.py)."""
        with autocast_off(X.device):
            return self.algorithm().run(X, Y, lambda1, lambda2, beta0)
