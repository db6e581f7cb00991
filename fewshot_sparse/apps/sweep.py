"""The lambda path on cached features: accuracy against the fraction of features a task
uses, over a grid of lambda1 (or of lambda1 / lambda_max per task), without the encoder.

For each shot of a feature cache (apps/features.py), the cached episodes are taken
``tasks_per_batch`` at a time, and each batch walks the whole grid with one head per grid
point, built through the head registry (``heads.build_head``); per episode we keep the
query accuracy, the number of features the classifier uses and the solver's iterations.
Each grid point reports mean accuracy with its 95% CI (engine/report.py's
``mean_ci95``), mean features used (fraction and count), the mean lambda1, the
unconverged tasks, the mean and max solver iterations per task and the time spent
fitting it (summed over batches). Other heads (svm_cs, ridge, protonet) are scored on the
same episodes as reference points.

``--lambda-ratio-grid``: lambda1 = ratio * lambda_max of each task (apps/lambda_max.py:
exact when the head smooths, s > 0; a sufficient upper bound when s = 0).

Warm starts: the grid runs from the largest lambda1 to the smallest, and each point of a
batch starts the solver from the dual solution of the previous point on the same
episodes (``head(..., beta0=previous.beta)``; the first point starts cold).
``warm_start=False`` (``--no-warm-start``) solves every point from the solver's own
start, for comparison; both reach the same solutions up to the solver's tolerance.

Outputs (``out_dir``): ``sweep.csv``, ``sweep.json``, ``sweep.png`` (analysis/lambda_path.py)
and TensorBoard scalars under ``tb/`` (``sweep_<K>shot/accuracy`` and
``sweep_<K>shot/active_fraction`` with the grid index as step; reference heads under
``reference_<K>shot/<head>_*``).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from fewshot_sparse.analysis.lambda_path import save_sweep
from fewshot_sparse.apps.features import FeatureCache
from fewshot_sparse.apps.lambda_max import lambda_max, lambda_max_is_exact
from fewshot_sparse.engine.device import resolve_device
from fewshot_sparse.engine.report import mean_ci95
from fewshot_sparse.engine.tb_logging import TBLogger
from fewshot_sparse.errors import ConfigError, FewshotSparseError
from fewshot_sparse.heads import ConvergenceWarning, build_head

REFERENCE_HEADS = ("svm_cs", "ridge", "protonet")
SWEPT_HEADS = ("group_lasso_svm",)  # heads with a lambda1 to sweep


@dataclass
class SweepPoint:
    """One grid point (or one reference head) of one shot."""

    shot: int
    head: str
    kind: str                    # "path" or "reference"
    lambda1: Optional[float]     # the grid's lambda1 (None on a ratio grid)
    lambda_ratio: Optional[float]
    mean_lambda1: Optional[float]  # mean over episodes of the lambda1 used
    episodes: int
    accuracy: float
    ci95: float
    std: float
    active_fraction: float
    active_features: float
    n_features: int
    unconverged: int
    seconds: float               # time fitting this point, summed over batches
    iterations_mean: Optional[float] = None  # solver iterations per task (None: closed form)
    iterations_max: Optional[int] = None


@dataclass
class SweepReport:
    features: str
    head: str
    head_kwargs: dict
    grid: str                    # "lambda1" or "lambda_ratio"
    lambda_max: str              # "exact" / "sufficient" (ratio grid), "" otherwise
    warm_start: bool             # each grid point started from the previous one's solution
    points: list
    encoder_seconds: dict        # per shot: what encoding the episodes took (features.json)
    files: dict

    def to_dict(self) -> dict:
        return {**asdict(self), "points": [asdict(p) for p in self.points]}

    def table(self) -> str:
        lines = [f"lambda path of {self.head} on {self.features} ({self.grid} grid"
                 + (f", lambda_max {self.lambda_max}" if self.lambda_max else "") + ")",
                 f"{'shot':>4}  {'head':<16} {'lambda1':>9} {'ratio':>6}  "
                 f"{'accuracy (95% CI)':>19}  {'features used':>18}  {'unconv':>6}  "
                 f"{'iters':>9}  {'time':>6}"]
        for p in self.points:
            lam = "-" if p.mean_lambda1 is None else f"{p.mean_lambda1:.3g}"
            ratio = "-" if p.lambda_ratio is None else f"{p.lambda_ratio:.3g}"
            acc = f"{100 * p.accuracy:6.2f} +- {100 * p.ci95:5.2f}%"
            used = f"{100 * p.active_fraction:5.1f}% ({p.active_features:.0f}/{p.n_features})"
            its = ("-" if p.iterations_mean is None
                   else f"{p.iterations_mean:.1f}/{p.iterations_max}")
            lines.append(f"{p.shot:>4}  {p.head:<16} {lam:>9} {ratio:>6}  {acc:>19}  "
                         f"{used:>18}  {p.unconverged:>6}  {its:>9}  {p.seconds:5.1f}s")
        return "\n".join(lines)


def sweep(features, *, head: str = "group_lasso_svm",
          lambda1_grid: Optional[Sequence[float]] = None,
          lambda_ratio_grid: Optional[Sequence[float]] = None,
          head_kwargs: Optional[dict] = None,
          reference_heads: Sequence[str] = REFERENCE_HEADS,
          shots: Optional[Sequence[int]] = None, tasks_per_batch: int = 100,
          device: str = "auto", out_dir=None, progress: bool = True,
          print_table: bool = True, warm_start: bool = True) -> SweepReport:
    """Fit ``head`` along the grid on a feature cache; see the module docstring.

    head_kwargs: the head's other options; by default those of the checkpoint's head
    when it is the same head (lambda2 and smoothing as trained, learned values
    included), else the head's defaults.
    out_dir: where the files go (default ``<features>/sweep``).
    warm_start: start each grid point from the previous point's dual solution.
    """
    cache = features if isinstance(features, FeatureCache) else FeatureCache(features)
    if (lambda1_grid is None) == (lambda_ratio_grid is None):
        raise ConfigError("give exactly one of lambda1_grid and lambda_ratio_grid")
    if head not in SWEPT_HEADS:
        raise ConfigError(f"sweep: head {head!r} has no lambda1 to sweep "
                          f"(sweepable: {', '.join(SWEPT_HEADS)})")
    grid_name = "lambda1" if lambda1_grid is not None else "lambda_ratio"
    grid = sorted({float(v) for v in (lambda1_grid if lambda1_grid is not None
                                      else lambda_ratio_grid)}, reverse=True)
    if not grid or grid[-1] < 0:
        raise ConfigError(f"{grid_name} grid must hold values >= 0, got {grid}")
    if tasks_per_batch < 1:
        raise ConfigError(f"tasks_per_batch must be >= 1, got {tasks_per_batch}")
    kwargs = _head_kwargs(cache, head, head_kwargs)
    dev = resolve_device(device)
    shots = cache.shots if shots is None else [int(s) for s in shots]
    smoothing = float(kwargs.get("smoothing", 0.0))
    points: list[SweepPoint] = []
    for shot in shots:
        data = cache.shot(shot)
        path = _fit_path(data, head, kwargs, grid_name, grid, tasks_per_batch, dev, warm_start)
        points.extend(path)
        if progress:
            for value, p in zip(grid, path):
                print(f"  {shot}-shot {grid_name}={value:g}: accuracy {100 * p.accuracy:.2f}%, "
                      f"features used {100 * p.active_fraction:.1f}%, solver iterations "
                      f"{p.iterations_mean:.1f} per task", flush=True)
        points.extend(_fit_reference(data, ref, tasks_per_batch, dev) for ref in reference_heads)
    out_dir = Path(out_dir) if out_dir is not None else cache.root / "sweep"
    report = SweepReport(
        features=str(cache.root), head=head, head_kwargs=kwargs, grid=grid_name,
        lambda_max=("" if grid_name == "lambda1" else
                    "exact" if lambda_max_is_exact(smoothing) else "sufficient"),
        warm_start=bool(warm_start), points=points, files={},
        encoder_seconds={str(k): cache.meta["shots"][str(k)].get("encoder_seconds")
                         for k in shots})
    report.files = save_sweep(report.to_dict(), out_dir)
    _log_tensorboard(report, out_dir / "tb")
    report.files["tensorboard"] = str(out_dir / "tb")
    if print_table:
        print(report.table())
        print("written: " + ", ".join(str(p) for p in report.files.values()))
    return report


def _head_kwargs(cache: FeatureCache, head: str, head_kwargs: Optional[dict]) -> dict:
    own = cache.meta.get("head") or {}
    kw = {}
    if own.get("name") == head:
        kw = {k: v for k, v in (own.get("kwargs") or {}).items()
              if k not in ("learn_lambdas", "learn_scale", "init_scale", "lambda1")}
        values = own.get("values") or {}
        if "lambda2" in values:
            kw["lambda2"] = values["lambda2"]  # as trained (learned when it was learnable)
    kw.update(head_kwargs or {})
    kw.pop("lambda1", None)
    if kw.get("learn_lambdas"):  # the sweep sets lambda1 per point; nothing is learned here
        raise ConfigError("sweep: learn_lambdas must be false (the grid sets lambda1 at every point)")
    return kw


def _build(name: str, kw: dict):
    try:
        return build_head(name, **kw)
    except FewshotSparseError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"head {name!r}: {e}") from None


class _Tally:
    """What one grid point (or reference head) accumulates over the batches."""

    def __init__(self):
        self.acc, self.used, self.lambdas, self.iterations = [], [], [], []
        self.unconverged, self.seconds = 0, 0.0

    def add(self, out, query_labels, lambda1=None) -> None:
        self.acc.append((out.logits.argmax(-1) == query_labels).double().mean(1).cpu())
        self.used.append(out.active.double().sum(1).cpu())
        if lambda1 is not None:
            self.lambdas.append(lambda1.double().cpu())
        if out.info is not None:
            self.unconverged += int((~out.info.converged.bool()).sum())
            self.iterations.append(out.info.iterations.cpu())

    def point(self, data, name: str, fixed_l1: Optional[float], ratio: Optional[float]):
        acc_t, used_t = torch.cat(self.acc).numpy(), torch.cat(self.used).numpy()
        mean, ci, std = mean_ci95(acc_t)
        n_features = int(data.support.shape[-1])
        its = torch.cat(self.iterations).double() if self.iterations else None
        return SweepPoint(
            shot=data.shot, head=name, kind="path" if self.lambdas else "reference",
            lambda1=fixed_l1, lambda_ratio=ratio,
            mean_lambda1=float(torch.cat(self.lambdas).mean()) if self.lambdas else None,
            episodes=int(acc_t.size), accuracy=mean, ci95=ci, std=std,
            active_fraction=float(np.mean(used_t) / n_features),
            active_features=float(np.mean(used_t)), n_features=n_features,
            unconverged=self.unconverged, seconds=round(self.seconds, 6),
            iterations_mean=None if its is None else round(float(its.mean()), 3),
            iterations_max=None if its is None else int(its.max()))


def _solve(head, query, support, s_labels, n_way, beta0=None):
    warm = {} if beta0 is None else {"beta0": beta0}  # only the swept heads take beta0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # counted by the tally
        return head(query, support, s_labels, n_way, **warm)


@torch.no_grad()
def _fit_path(data, name: str, kw: dict, grid_name: str, grid: list, tasks_per_batch: int,
              device, warm_start: bool) -> list:
    """The path of head ``name`` over ``grid`` (descending) on every episode of ``data``:
    per batch, each point warm-starts from the previous point's ``beta`` (if warm_start).
    On a ratio grid each task's lambda1 is ratio * its lambda_max."""
    ratio = grid_name == "lambda_ratio"
    heads = [_build(name, {**kw, "lambda1": 1.0 if ratio else v}).to(device) for v in grid]
    tallies = [_Tally() for _ in grid]
    n_way = int(data.support_labels.max()) + 1
    lam2, smoothing = float(kw.get("lambda2", 1.0)), float(kw.get("smoothing", 0.0))
    for query, support, s_labels, q_labels in data.batches(tasks_per_batch, device):
        lmax = lambda_max(support, s_labels, n_way, lam2, smoothing) if ratio else None
        beta = None
        for value, head, tally in zip(grid, heads, tallies):
            t0 = time.perf_counter()
            if ratio:
                l1 = value * lmax.double()
                head.lambda1.assign(l1)
            else:
                l1 = torch.full((support.shape[0],), value, dtype=torch.float64)
            out = _solve(head, query, support, s_labels, n_way, beta)
            tally.add(out, q_labels, l1)
            beta = out.beta if warm_start else None
            tally.seconds += time.perf_counter() - t0
    return [t.point(data, name, None if ratio else v, v if ratio else None)
            for v, t in zip(grid, tallies)]


@torch.no_grad()
def _fit_reference(data, name: str, tasks_per_batch: int, device) -> SweepPoint:
    """Reference head ``name`` (its defaults) on every episode of ``data``."""
    head, tally = _build(name, {}).to(device), _Tally()
    n_way = int(data.support_labels.max()) + 1
    for query, support, s_labels, q_labels in data.batches(tasks_per_batch, device):
        t0 = time.perf_counter()
        tally.add(_solve(head, query, support, s_labels, n_way), q_labels)
        tally.seconds += time.perf_counter() - t0
    return tally.point(data, name, None, None)


def _log_tensorboard(report: SweepReport, log_dir: Path) -> None:
    logger = TBLogger(log_dir)
    try:
        steps: dict = {}
        for p in report.points:
            if p.kind == "path":
                step = steps[p.shot] = steps.get(p.shot, -1) + 1
                values = {"accuracy": p.accuracy, "active_fraction": p.active_fraction,
                          "iterations_mean": p.iterations_mean}
                if p.mean_lambda1 is not None:
                    values["lambda1"] = p.mean_lambda1
                logger.scalars(f"sweep_{p.shot}shot", values, step)
            else:
                logger.scalars(f"reference_{p.shot}shot",
                               {f"{p.head}_accuracy": p.accuracy,
                                f"{p.head}_active_fraction": p.active_fraction}, 0)
    finally:
        logger.close()


__all__ = ["REFERENCE_HEADS", "SweepPoint", "SweepReport", "sweep"]
