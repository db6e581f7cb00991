"""The standard evaluation protocol: N-way K-shot accuracy over fixed test episodes.

For each shot count K: ``episodes`` seeded test episodes (the same seed gives the same
episodes, for every checkpoint and head; the episode list is saved once and reused),
run through :func:`fewshot_sparse.engine.run_episodes.run_episodes`, summarised as

* mean query accuracy and its 95% confidence interval ``1.96 * std / sqrt(n)``
  (``std`` over episodes, ddof=0, as MetaOptNet and most few-shot papers report it);
* the mean fraction (and number) of features each task's classifier uses;
* the solver's report: mean and max iterations, largest relative duality gap, number of
  tasks that missed the solver's tolerance (closed-form heads have none).

``evaluate`` prints a table, writes a JSON file and returns an :class:`EvalReport`.
One encoder can be evaluated with several heads: ``head="protonet"`` (or
``head={"name": ..., "kwargs": {...}}``) replaces the checkpoint's head.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch

from fewshot_sparse.errors import CheckpointError, ConfigError, DataError, FewshotSparseError

DEFAULT_SEED = 2024  # test episodes are drawn from this seed unless told otherwise


# ------------------------------------------------------------------------------ numbers

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
        mean, ci, std = mean_ci95(res.accuracy.numpy())
        active = res.active.float()
        solver = None
        if res.iterations is not None:
            it = res.iterations.float()
            solver = {
                "mean_iterations": float(it.mean()),
                "max_iterations": int(it.max()),
                "max_gap": float(res.gap.max()),
                "unconverged": int((~res.converged.bool()).sum()),
            }
        return cls(shot=shot, episodes=res.n_episodes, accuracy=mean, ci95=ci, std=std,
                   loss=float(res.loss.mean()), active_fraction=float(active.mean()),
                   active_features=float(active.sum(1).mean()),
                   n_features=int(res.active.shape[1]), solver=solver, seconds=seconds,
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
                 f"seed: {self.seed}"]
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

    def save(self, path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.json_path = str(path)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path


# ---------------------------------------------------------------------- model and data

HeadSpec = Union[None, str, dict, Sequence]


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ConfigError(f"bad device {device!r} ({e})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for, but CUDA is not available")
    return dev


def _head_spec(head: HeadSpec, head_kwargs: Optional[dict]) -> tuple[Optional[str], dict]:
    if head is None:
        return None, dict(head_kwargs or {})
    if isinstance(head, str):
        return head, dict(head_kwargs or {})
    if isinstance(head, dict):
        if "name" not in head:
            raise ConfigError(f"head override {head!r} needs a 'name'")
        return head["name"], {**head.get("kwargs", {}), **(head_kwargs or {})}
    name, kw = head
    return name, {**dict(kw), **(head_kwargs or {})}


def load_model(checkpoint, *, device="cpu"):
    """``(model, config, checkpoint path, checkpoint dict)`` from a checkpoint file (or a
    run directory: its ``best.pt``, else ``last.pt``) written by ``engine/train.py``.

    The model is rebuilt from the checkpoint's own config (encoder, head and their
    kwargs), then its weights are loaded (CheckpointError when they do not fit).
    """
    from fewshot_sparse.config import config_from_dict
    from fewshot_sparse.engine.checkpoint import load_checkpoint, read_checkpoint

    path = Path(checkpoint)
    if path.is_dir():  # a run directory: its last (or best) checkpoint
        for name in ("best.pt", "last.pt", "checkpoint.pt"):
            if (path / name).is_file():
                path = path / name
                break
        else:
            cands = sorted(path.glob("*.pt")) + sorted(path.glob("checkpoints/*.pt"))
            if not cands:
                raise CheckpointError(f"no checkpoint (*.pt) in directory {path}")
            path = cands[-1]
    state = read_checkpoint(path)
    try:
        cfg = config_from_dict(state["config"])
    except ConfigError as e:
        raise CheckpointError(f"{path}: its config does not load ({e})") from None
    model = build_model_from_config(cfg)
    load_checkpoint(path, model=model, encoder=state["encoder"])
    state.pop("optimizer", None)
    state.pop("model", None)
    return model.to(device), cfg, path, state


def build_model_from_config(cfg):
    """The EpisodicModel a config describes (``fewshot_sparse.model.build_model``)."""
    from fewshot_sparse.model import build_model

    return build_model(cfg)


def replace_head(model, cfg, head: HeadSpec, head_kwargs: Optional[dict] = None):
    """Put the requested head on ``model`` (in place); returns ``(name, kwargs)`` of the
    head now in use. A head of the checkpoint's own name keeps its learned parameters
    (e.g. a learned logit scale) when they fit."""
    from fewshot_sparse.heads import HEADS

    name, kw = _head_spec(head, head_kwargs)
    if cfg is not None:
        own_name = cfg.head.name
    else:  # an in-memory model: its head's registry name (kwargs unknown: defaults)
        own_name = next((n for n, c in HEADS.items() if type(model.head) is c),
                        type(model.head).__name__)
    own_kw = dict(cfg.head.kwargs) if cfg is not None else {}
    if name is None and not kw:
        return own_name, own_kw
    same = name is None or name == own_name
    if same:
        name, kw = own_name, {**own_kw, **kw}
    new = _build_head(name, kw)
    if same:
        # Keep what the checkpoint's head learned (e.g. its logit scale), except the
        # entries the override changes: those whose initial value differs between the
        # head as configured at training time and the head asked for now.
        base = _build_head(name, own_kw).state_dict()
        trained, fresh = model.head.state_dict(), new.state_dict()
        keep = {k: v for k, v in trained.items()
                if k in fresh and k in base and fresh[k].shape == v.shape
                and torch.equal(base[k], fresh[k])}
        new.load_state_dict({**fresh, **keep})
    device = next(iter(model.parameters()), torch.empty(0)).device
    model.head = new.to(device)
    return name, kw


def _build_head(name: str, kw: dict):
    from fewshot_sparse.heads import build_head

    try:
        return build_head(name, **kw)
    except FewshotSparseError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"head {name!r}: {e}") from None


def open_split(data, split: str):
    """The ``split`` of a prepared cache (DataError naming what is wrong)."""
    from fewshot_sparse.data.cache import PreparedSplit, read_manifest

    root = Path(data)
    if not root.exists():
        raise DataError(f"no prepared dataset at {root} (run `fewshot-sparse prepare` first)")
    read_manifest(root)  # DataError when root is not a prepared cache
    return PreparedSplit(root, split)


def episodes_file(episodes_dir, split_data, *, way: int, shot: int, query: int,
                  episodes: int, seed: int) -> Path:
    """Where the fixed episode list for these settings is saved."""
    name = getattr(split_data, "split", "test")
    return Path(episodes_dir) / f"{name}_{way}way{shot}shot{query}query_{episodes}x_seed{seed}.npz"


def fixed_episodes(split_data, *, way: int, shot: int, query: int, episodes: int, seed: int,
                   episodes_dir=None):
    """The protocol's episode list: loaded from ``episodes_dir`` when saved there before
    (and still matching the data), else drawn from ``seed`` (and saved). Returns
    ``(FixedEpisodes, path or None)``."""
    from fewshot_sparse.data.fixed_episodes import FixedEpisodes, make_fixed_episodes

    path = None
    if episodes_dir is not None:
        path = episodes_file(episodes_dir, split_data, way=way, shot=shot, query=query,
                             episodes=episodes, seed=seed)
        if path.is_file():
            try:
                fixed = FixedEpisodes.load(path)
                fixed.check(split_data)
                return fixed, path
            except DataError:
                pass  # stale (the data was prepared again): draw and save anew
    fixed = make_fixed_episodes(split_data, way, shot, query, episodes, seed)
    if path is not None:
        try:
            fixed.save(path)
        except OSError:
            path = None
    return fixed, path


def protocol_batches(split_data, *, way: int, shot: int, query: int, episodes: int,
                     seed: int, tasks_per_batch: int, episodes_dir=None):
    """The fixed, seeded test episodes as a loader of EpisodeBatch, and the file holding
    their list (None when not saved)."""
    from fewshot_sparse.data.loader import episode_loader

    fixed, path = fixed_episodes(split_data, way=way, shot=shot, query=query,
                                 episodes=episodes, seed=seed, episodes_dir=episodes_dir)
    loader = episode_loader(split_data, tasks_per_batch=tasks_per_batch, n_batches=None,
                            fixed=fixed)
    return loader, path


def make_normalizer(data, split_data, ckpt_state: Optional[dict] = None):
    """The evaluation transform: per-channel (x - mean) / std with the statistics the model
    was trained with: the checkpoint's own when it records them (``normalize``:
    {"mean", "std"}), else the training split of the same prepared cache, else the
    evaluated split's."""
    from fewshot_sparse.data.augment import Normalize
    from fewshot_sparse.data.cache import PreparedSplit

    rec = (ckpt_state or {}).get("normalize")
    if isinstance(rec, dict) and "mean" in rec and "std" in rec:
        return Normalize(rec["mean"], rec["std"])
    stats = split_data
    if data is not None and getattr(split_data, "split", None) != "train":
        try:
            stats = PreparedSplit(data, "train")
        except DataError:
            stats = split_data
    return Normalize(stats.mean, stats.std)


def _progress(it, total, desc, enabled):
    if not enabled:
        return it
    try:
        from tqdm import tqdm
    except ImportError:
        return it
    return tqdm(it, total=total, desc=desc, leave=False, unit="batch")


# ---------------------------------------------------------------------------- protocol

@dataclass
class EvalContext:
    """A model ready for the protocol: weights loaded, head chosen, data opened."""

    model: torch.nn.Module
    config: Any                      # the checkpoint's Config (None for an in-memory model)
    checkpoint: Optional[Path]
    name: str                        # how reports name the model
    run_dir: Optional[Path]
    data: Path
    split: Any                       # PreparedSplit
    normalize: Any
    head: str
    head_kwargs: dict


def open_for_eval(checkpoint, *, data=None, head: HeadSpec = None,
                  head_kwargs: Optional[dict] = None, split: str = "test",
                  device: str = "auto") -> EvalContext:
    """Load ``checkpoint`` (file, run directory or in-memory model), swap the head if
    asked, and open the ``split`` of ``data`` (default: the data the model trained on)."""
    dev = resolve_device(device)
    if isinstance(checkpoint, torch.nn.Module):
        model, cfg, path, state = checkpoint.to(dev), None, None, None
        name = type(checkpoint).__name__
    else:
        model, cfg, path, state = load_model(checkpoint, device=dev)
        name = str(path)
    if data is None:
        if cfg is None:
            raise ConfigError("pass data=<prepared dataset folder> with an in-memory model")
        data = cfg.data.root
    head_name, head_kw = replace_head(model, cfg, head, head_kwargs)
    split_data = open_split(data, split)
    run_dir = None
    if path is not None:
        run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return EvalContext(model=model, config=cfg, checkpoint=path, name=name, run_dir=run_dir,
                       data=Path(data), split=split_data,
                       normalize=make_normalizer(data, split_data, state),
                       head=head_name, head_kwargs=head_kw)


def run_protocol(ctx: EvalContext, *, way: int, shot: int, query: int, episodes: int,
                 seed: int, tasks_per_batch: int = 8, episodes_dir=None,
                 progress: bool = False, desc: str = ""):
    """Run ``ctx.model`` on the fixed episodes; returns ``(EpisodeResults, episodes file)``."""
    from fewshot_sparse.engine.run_episodes import run_episodes

    loader, path = protocol_batches(ctx.split, way=way, shot=shot, query=query,
                                    episodes=episodes, seed=seed,
                                    tasks_per_batch=tasks_per_batch, episodes_dir=episodes_dir)
    import warnings

    try:
        from fewshot_sparse.heads import ConvergenceWarning
    except ImportError:  # pragma: no cover
        ConvergenceWarning = None
    with warnings.catch_warnings():
        # Unconverged tasks are counted in the report (solver.unconverged), not warned
        # about batch by batch.
        if ConvergenceWarning is not None:
            warnings.simplefilter("ignore", ConvergenceWarning)
        res = run_episodes(ctx.model,
                           _progress(loader, len(loader), desc or f"{way}-way {shot}-shot",
                                     progress),
                           normalize=ctx.normalize)
    return res, path


def _check_protocol(way, shots, query, episodes, tasks_per_batch) -> list[int]:
    shots = [int(s) for s in ([shots] if isinstance(shots, int) else shots)]
    for key, value in {"query": query, "episodes": episodes,
                       "tasks_per_batch": tasks_per_batch}.items():
        if value < 1:
            raise ConfigError(f"{key} must be >= 1, got {value}")
    if way < 2:
        raise ConfigError(f"way must be >= 2, got {way}")
    if not shots or min(shots) < 1:
        raise ConfigError(f"shots must be >= 1, got {shots}")
    return shots


def evaluate(checkpoint, *, data=None, way: int = 5, shots: Sequence[int] = (1, 5),
             query: int = 15, episodes: int = 1000, seed: int = DEFAULT_SEED,
             head: HeadSpec = None, head_kwargs: Optional[dict] = None,
             tasks_per_batch: int = 8, split: str = "test", device: str = "auto",
             out_dir=None, json_name: Optional[str] = None, episodes_dir=None,
             progress: bool = True, print_table: bool = True) -> EvalReport:
    """Evaluate a checkpoint with the standard protocol; see the module docstring.

    checkpoint: a checkpoint file or run directory (or an ``EpisodicModel`` already in
        memory; then ``data`` is required and nothing is written unless ``out_dir``).
    data: a prepared cache (``fewshot-sparse prepare``); default: the checkpoint
        config's ``data.root``.
    head / head_kwargs: evaluate with another head (a name, or {"name", "kwargs"}).
    out_dir: where the JSON goes (default ``<run dir>/eval``), named
        ``eval_<head>_<way>way.json`` unless ``json_name``.
    episodes_dir: where the fixed episode lists are saved and reused (default
        ``<data>/episodes`` when writable, else ``<out_dir>/episodes``).
    """
    shots = _check_protocol(way, shots, query, episodes, tasks_per_batch)
    ctx = open_for_eval(checkpoint, data=data, head=head, head_kwargs=head_kwargs,
                        split=split, device=device)
    if out_dir is None and ctx.run_dir is not None:
        out_dir = ctx.run_dir / "eval"
    if episodes_dir is None:
        episodes_dir = _episodes_dir(ctx.data, out_dir)
    report = EvalReport(checkpoint=ctx.name, head=ctx.head, head_kwargs=ctx.head_kwargs,
                        data=str(ctx.data), split=split, way=way, query=query, seed=seed)
    for shot in shots:
        t0 = time.perf_counter()
        res, path = run_protocol(ctx, way=way, shot=shot, query=query, episodes=episodes,
                                 seed=seed, tasks_per_batch=tasks_per_batch,
                                 episodes_dir=episodes_dir, progress=progress)
        report.results.append(ShotResult.from_results(
            shot, res, time.perf_counter() - t0, None if path is None else str(path)))
    if out_dir is not None:
        report.save(Path(out_dir) / (json_name or f"eval_{ctx.head}_{way}way.json"))
    if print_table:
        print(report.table())
        if report.json_path:
            print(f"written: {report.json_path}")
    return report


def _episodes_dir(data: Path, out_dir) -> Optional[Path]:
    """``<data>/episodes`` when writable (shared by every checkpoint evaluated on this
    data), else ``<out_dir>/episodes``."""
    import os

    cand = data / "episodes"
    if (cand.is_dir() and os.access(cand, os.W_OK)) or (data.is_dir() and os.access(data, os.W_OK)):
        return cand
    return None if out_dir is None else Path(out_dir) / "episodes"


__all__ = ["DEFAULT_SEED", "EvalContext", "EvalReport", "ShotResult", "evaluate", "load_model",
           "mean_ci95", "open_for_eval", "replace_head", "resolve_device", "run_protocol"]
