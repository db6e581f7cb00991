"""What the evaluation protocol reports: per-shot numbers (:class:`ShotResult`) and the
whole run (:class:`EvalReport`), with its terminal table and JSON file.

The confidence interval is ``1.96 * std / sqrt(n)`` with ``std`` over episodes (ddof=0),
as MetaOptNet and most few-shot papers report it.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from fewshot_sparse.files import atomic_write_text


def mean_ci95(values) -> tuple[float, float, float]:
    """``(mean, 1.96 * std / sqrt(n), std)`` of per-episode values (std with ddof=0)."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.size == 0:
        return float("nan"), float("nan"), float("nan")
    std = float(v.std())
    return float(v.mean()), 1.96 * std / math.sqrt(v.size), std


@dataclass
class ShotResult:
    """The protocol's numbers for one (way, shot)."""

    shot: int
    episodes: int
    accuracy: float              # mean query accuracy over episodes, in [0, 1]
    ci95: float                  # half-width of the 95% confidence interval
    std: float
    loss: float
    active_fraction: float       # mean fraction of features a task's classifier uses
    active_features: float       # the same as a count
    n_features: int
    solver: Optional[dict]       # mean_iterations, max_iterations, max_gap, unconverged
    seconds: float
    episodes_file: Optional[str] = None

    @classmethod
    def from_results(cls, shot: int, res, seconds: float,
                     episodes_file: Optional[str] = None) -> "ShotResult":
        """From an ``EpisodeResults`` (engine/run_episodes.py) of this shot count."""
        mean, ci, std = mean_ci95(res.accuracy.numpy())
        active = res.active.float()
        return cls(shot=shot, episodes=res.n_episodes, accuracy=mean, ci95=ci, std=std,
                   loss=float(res.loss.mean()), active_fraction=float(active.mean()),
                   active_features=float(active.sum(1).mean()),
                   n_features=int(res.active.shape[1]), solver=res.solver(), seconds=seconds,
                   episodes_file=episodes_file)


@dataclass
class EvalReport:
    checkpoint: str
    head: str
    head_kwargs: dict
    data: str
    split: str
    way: int
    query: int
    seed: int
    results: list = field(default_factory=list)  # [ShotResult], one per shot
    json_path: Optional[str] = None
    input_shape: Optional[list] = None   # [C, H, W] fed to the model (its training shape)
    data_shape: Optional[list] = None    # [C, H, W] of the evaluated images as prepared
    data_hash: Optional[str] = None      # content hash of the prepared cache's manifest

    def result(self, shot: int) -> ShotResult:
        for r in self.results:
            if r.shot == shot:
                return r
        raise KeyError(shot)

    def to_dict(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        """The terminal table: one row per shot."""
        head = self.head + (f" {self.head_kwargs}" if self.head_kwargs else "")
        lines = [f"{self.way}-way evaluation of {self.checkpoint}  head: {head}",
                 f"data: {self.data} [{self.split}]  query: {self.query} per class  "
                 f"seed: {self.seed}" + self._input_text()]
        hdr = (f"{'shot':>4}  {'episodes':>8}  {'accuracy (95% CI)':>19}  "
               f"{'features used':>18}  {'iters mean/max':>14}  {'max gap':>8}  "
               f"{'unconv':>6}  {'time':>6}")
        lines += [hdr, "-" * len(hdr)]
        for r in self.results:
            acc = f"{100 * r.accuracy:6.2f} +- {100 * r.ci95:5.2f}%"
            used = f"{100 * r.active_fraction:5.1f}% ({r.active_features:.0f}/{r.n_features})"
            if r.solver:
                s = r.solver
                it = f"{s['mean_iterations']:.0f}/{s['max_iterations']}"
                gap, unc = f"{s['max_gap']:.1e}", f"{s['unconverged']}"
            else:
                it, gap, unc = "-", "-", "-"
            lines.append(f"{r.shot:>4}  {r.episodes:>8}  {acc:>19}  {used:>18}  {it:>14}  "
                         f"{gap:>8}  {unc:>6}  {r.seconds:5.1f}s")
        return "\n".join(lines)

    def _input_text(self) -> str:
        if not self.input_shape:
            return ""
        c, h, w = self.input_shape
        text = f"  input: {h}x{w}x{c}"
        if self.data_shape and list(self.data_shape) != list(self.input_shape):
            c0, h0, w0 = self.data_shape
            text += f" (from {h0}x{w0}x{c0})"
        return text

    def save(self, path) -> Path:
        path = Path(path)
        self.json_path = str(path)
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")
        return path


__all__ = ["EvalReport", "ShotResult", "mean_ci95"]
