"""The standard evaluation protocol: N-way K-shot accuracy over fixed test episodes.

For each shot count K: ``episodes`` seeded test episodes (the same seed gives the same
episodes, for every checkpoint and head; the episode list is saved once and reused,
see engine/protocol.py), run through :func:`fewshot_sparse.engine.run_episodes.run_episodes`,
summarised (engine/report.py) as

* mean query accuracy and its 95% confidence interval ``1.96 * std / sqrt(n)``;
* the mean fraction (and number) of features each task's classifier uses;
* the solver's report: mean and max iterations, largest relative duality gap, number of
  tasks that missed the solver's tolerance (closed-form heads have none).

``evaluate`` prints a table, writes a JSON file and returns an :class:`EvalReport`.
One encoder can be evaluated with several heads: ``head="protonet"`` (or
``head={"name": ..., "kwargs": {...}}``) replaces the checkpoint's head.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from tqdm import tqdm

from fewshot_sparse.data.input_shape import input_transform, shape_text
from fewshot_sparse.engine.convergence import warn_unconverged
from fewshot_sparse.engine.device import resolve_device
from fewshot_sparse.engine.loading import (HeadSpec, load_model, make_normalizer,
                                           model_input_shape, replace_head, run_dir_of)
from fewshot_sparse.engine.protocol import (DEFAULT_SEED, EpisodeProtocol, fixed_episodes, open_split,
                                            protocol_batches)
from fewshot_sparse.engine.report import EvalReport, ShotResult
from fewshot_sparse.engine.run_episodes import run_episodes
from fewshot_sparse.errors import ConfigError
from fewshot_sparse.files import check_writable, refuse_other_settings


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
    input_shape: Optional[list] = None   # (C, H, W) the model is fed (its training shape)
    data_shape: Optional[list] = None    # (C, H, W) of the split's images
    data_hash: Optional[str] = None      # the prepared cache's manifest content hash

    def shape_note(self) -> str:
        """One line when the split's images are converted to the model's input shape."""
        if self.input_shape is None or self.input_shape == self.data_shape:
            return ""
        return (f"note: {self.data} [{getattr(self.split, 'split', '?')}] holds "
                f"{shape_text(self.data_shape)} images; the model was trained on "
                f"{shape_text(self.input_shape)}: they are converted to that (channels, "
                f"then a bilinear resize) before the encoder")


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
    h, w, c = split_data.image_shape
    model_shape = model_input_shape(model, cfg, state)
    stats = make_normalizer(data, split_data, state,
                            train_root=None if cfg is None else cfg.data.root,
                            channels=None if model_shape is None else model_shape[0])
    normalize = input_transform((c, h, w), model_shape, stats, where=f"{data} [{split}]")
    return EvalContext(model=model, config=cfg, checkpoint=path, name=name,
                       run_dir=None if path is None else run_dir_of(path),
                       data=Path(data), split=split_data, normalize=normalize,
                       head=head_name, head_kwargs=head_kw,
                       input_shape=list(model_shape or (c, h, w)), data_shape=[c, h, w],
                       data_hash=split_data.content_hash)


def default_episodes_dir(data: Path, out_dir) -> Optional[Path]:
    """``<data>/episodes`` when writable (shared by every checkpoint evaluated on this
    data), else ``<out_dir>/episodes``."""
    cand = data / "episodes"
    if (cand.is_dir() and os.access(cand, os.W_OK)) or (data.is_dir() and os.access(data, os.W_OK)):
        return cand
    return None if out_dir is None else Path(out_dir) / "episodes"


def run_protocol(ctx: EvalContext, protocol: EpisodeProtocol, shot: int, *, episodes_dir=None,
                 progress: bool = False, desc: str = ""):
    """Run ``ctx.model`` on the protocol's fixed ``shot``-shot episodes; returns
    ``(EpisodeResults, episodes file or None)``."""
    path = None
    if episodes_dir is not None:
        path = Path(episodes_dir) / protocol.file_name(getattr(ctx.split, "split", "test"), shot)
    fixed, path = fixed_episodes(ctx.split, protocol, shot, path, must_save=False)
    loader = protocol_batches(ctx.split, fixed, protocol.tasks_per_batch)
    batches = loader
    if progress:
        batches = tqdm(loader, total=len(loader), leave=False, unit="batch",
                       desc=desc or f"{protocol.way}-way {shot}-shot")
    res = run_episodes(ctx.model, batches, normalize=ctx.normalize)
    solver = res.solver()
    if solver:
        warn_unconverged(desc or f"{protocol.way}-way {shot}-shot evaluation of {ctx.name}",
                         solver["unconverged"], res.n_episodes, solver["max_gap"])
    return res, path


def report_settings(report_or_path, protocol: Optional[EpisodeProtocol] = None):
    """What makes two evaluation reports of one checkpoint differ (None: ``path`` is
    not an evaluation report of this project)."""
    if protocol is None:
        try:
            d = json.loads(Path(report_or_path).read_text(encoding="utf-8"))
            shots = [int(r["shot"]) for r in d["results"]]
            episodes = int(d["results"][0]["episodes"]) if d["results"] else None
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            return None
    else:
        d = report_or_path.to_dict()
        shots, episodes = list(protocol.shots), protocol.episodes
    keys = ("checkpoint", "head", "head_kwargs", "data", "split", "way", "query", "seed")
    if not isinstance(d, dict) or any(k not in d for k in keys):
        return None
    out = {k: d[k] for k in keys}
    return json.loads(json.dumps({**out, "shots": shots, "episodes": episodes}))


def evaluate(checkpoint, *, data=None, way: int = 5, shots: Sequence[int] = (1, 5),
             query: int = 15, episodes: int = 1000, seed: int = DEFAULT_SEED,
             head: HeadSpec = None, head_kwargs: Optional[dict] = None,
             tasks_per_batch: int = 8, split: str = "test", device: str = "auto",
             out_dir=None, json_name: Optional[str] = None, episodes_dir=None,
             progress: bool = True, print_table: bool = True,
             overwrite: bool = False) -> EvalReport:
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
    overwrite: replace a JSON file of an evaluation with other settings (without it,
        such a file is refused before any work: OutputError). The output folder's
        writability is checked before the work too.
    """
    protocol = EpisodeProtocol(way=way, shots=shots, query=query, episodes=episodes,
                               seed=seed, tasks_per_batch=tasks_per_batch)
    ctx = open_for_eval(checkpoint, data=data, head=head, head_kwargs=head_kwargs,
                        split=split, device=device)
    if out_dir is None and ctx.run_dir is not None:
        out_dir = ctx.run_dir / "eval"
    report = EvalReport(checkpoint=ctx.name, head=ctx.head, head_kwargs=ctx.head_kwargs,
                        data=str(ctx.data), split=split, way=way, query=query, seed=seed,
                        input_shape=ctx.input_shape, data_shape=ctx.data_shape,
                        data_hash=ctx.data_hash)
    if print_table and ctx.shape_note():
        print(ctx.shape_note())
    json_path = None
    if out_dir is not None:  # checked before the work: a read-only folder, another result
        json_path = check_writable(out_dir) / (json_name or f"eval_{ctx.head}_{way}way.json")
        old = report_settings(json_path) if json_path.exists() else {}
        refuse_other_settings(json_path, old, report_settings(report, protocol),
                              "an evaluation report", overwrite)
    if episodes_dir is None:
        episodes_dir = default_episodes_dir(ctx.data, out_dir)
    for shot in protocol.shots:
        t0 = time.perf_counter()
        res, path = run_protocol(ctx, protocol, shot, episodes_dir=episodes_dir,
                                 progress=progress)
        report.results.append(ShotResult.from_results(
            shot, res, time.perf_counter() - t0, None if path is None else str(path)))
    if json_path is not None:
        report.save(json_path)
    if print_table:
        print(report.table())
        if report.json_path:
            print(f"written: {report.json_path}")
    return report


__all__ = ["EvalContext", "default_episodes_dir", "evaluate", "open_for_eval", "report_settings",
           "run_protocol"]
