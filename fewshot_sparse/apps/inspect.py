"""``feature_usage``: run a checkpoint on test episodes and write the feature-usage report.

The episodes are the evaluation protocol's own (same seed, same fixed list), so the
features inspected are those of the tasks whose accuracy ``evaluate`` reports.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from fewshot_sparse.analysis import (
    FeatureUsageStats, compute_feature_usage, save_feature_usage, summary_text)
from fewshot_sparse.apps.evaluate import default_episodes_dir, open_for_eval, run_protocol
from fewshot_sparse.engine.protocol import DEFAULT_SEED, EpisodeProtocol
from fewshot_sparse.files import atomic_write_text, check_writable, refuse_other_settings


SETTINGS = "inspect.json"  # the settings of the report in a folder
OUTPUT_NAMES = ("heatmap.png", "active_counts.png", "usage_curve.png", "overlap.png",
                "feature_usage.npz", "tasks.csv", "features.csv", "classes.csv", "summary.txt")


@dataclass
class FeatureUsageReport:
    stats: FeatureUsageStats
    summary: str
    out_dir: Optional[Path]
    paths: dict = field(default_factory=dict)   # name -> Path of every file written
    accuracy: float = float("nan")              # mean query accuracy on these episodes


def feature_usage(checkpoint, *, data=None, episodes: int = 500, way: int = 5, shot: int = 5,
                  query: int = 15, out_dir=None, seed: Optional[int] = None, head=None,
                  head_kwargs: Optional[dict] = None, tasks_per_batch: int = 8,
                  split: str = "test", device: str = "auto", episodes_dir=None,
                  progress: bool = True, overwrite: bool = False) -> FeatureUsageReport:
    """Per-task feature usage of a checkpoint on ``episodes`` test episodes.

    Writes (under ``out_dir``, default ``<run dir>/inspect/<head>_<way>way<shot>shot``):
    ``heatmap.png``, ``active_counts.png``, ``usage_curve.png``, ``overlap.png``,
    ``feature_usage.npz`` (active masks, group norms, class ids, Jaccard matrix, ...),
    ``tasks.csv``, ``features.csv``, ``classes.csv``, ``summary.txt`` and ``inspect.json``
    (the settings). A folder holding a report of other settings (or such files not
    written by this project) is refused before any work unless ``overwrite``.
    ``checkpoint`` may also be an in-memory model (then ``data`` is required and nothing
    is written unless ``out_dir`` is given).
    """
    seed = DEFAULT_SEED if seed is None else seed
    protocol = EpisodeProtocol(way=way, shots=(shot,), query=query, episodes=episodes,
                               seed=seed, tasks_per_batch=tasks_per_batch)
    ctx = open_for_eval(checkpoint, data=data, head=head, head_kwargs=head_kwargs,
                        split=split, device=device)
    head_name, head_kw = ctx.head, ctx.head_kwargs
    if ctx.shape_note():
        print(ctx.shape_note())
    if out_dir is None and ctx.run_dir is not None:
        out_dir = ctx.run_dir / "inspect" / f"{head_name}_{way}way{shot}shot"
    meta = {"head": head_name, "way": way, "shot": shot, "query": query,
            "episodes": episodes, "split": split, "seed": seed, "checkpoint": ctx.name,
            "input_shape": ctx.input_shape, "data_shape": ctx.data_shape,
            "data_hash": ctx.data_hash}
    if head_kw:
        meta["head_kwargs"] = head_kw
    settings = json.loads(json.dumps({**meta, "data": str(ctx.data)}))
    if out_dir is not None:  # checked before the work: a read-only folder, another result
        check_writable(out_dir)
        refuse_other_settings(Path(out_dir) / SETTINGS, _saved_settings(Path(out_dir)),
                              settings, "a feature-usage report", overwrite)
    if episodes_dir is None:
        episodes_dir = default_episodes_dir(ctx.data, out_dir)
    res, _ = run_protocol(ctx, protocol, shot, episodes_dir=episodes_dir, progress=progress,
                          desc=f"inspect {way}-way {shot}-shot")
    split_data = ctx.split
    n_classes = getattr(split_data, "n_classes", None)
    stats = compute_feature_usage(res.active, res.group_norms, res.class_ids,
                                  n_classes=n_classes, meta=meta)
    accuracy = float(res.accuracy.mean())
    summary = summary_text(stats) + f"\nmean query accuracy on these episodes: {100 * accuracy:.2f}%"
    paths = {}
    if out_dir is not None:
        out_dir = Path(out_dir)
        paths = save_feature_usage(stats, out_dir)
        (out_dir / "summary.txt").write_text(summary + "\n")
        paths["settings"] = atomic_write_text(out_dir / SETTINGS,
                                              json.dumps(settings, indent=1) + "\n")
        class_names = getattr(split_data, "class_names", None)
        if class_names is not None and "classes" in paths:
            _add_class_names(paths["classes"], list(class_names))
    return FeatureUsageReport(stats=stats, summary=summary, out_dir=out_dir, paths=paths,
                              accuracy=accuracy)


def _saved_settings(out_dir: Path):
    """The settings of the report already in ``out_dir``: {} when it holds none of the
    report's files, None when it holds some but not as this project wrote them."""
    try:
        return json.loads((out_dir / SETTINGS).read_text(encoding="utf-8"))
    except FileNotFoundError:
        pass
    except (OSError, ValueError):
        return None
    if any((out_dir / name).exists() for name in OUTPUT_NAMES):
        return None
    return {}


def _add_class_names(csv_path: Path, names: list) -> None:
    """Append a class_name column to classes.csv."""
    with csv_path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    rows[0].append("class_name")
    for r in rows[1:]:
        c = int(r[0])
        r.append(str(names[c]) if c < len(names) else "")
    with csv_path.open("w", newline="") as f:
        csv.writer(f).writerows(rows)


__all__ = ["FeatureUsageReport", "feature_usage"]
