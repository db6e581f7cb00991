"""Write feature-usage statistics to disk: raw arrays (.npz), tables (.csv), summary (.txt),
figures (.png)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Dict

import numpy as np

from fewshot_sparse.analysis.figures import save_figures
from fewshot_sparse.analysis.stats import FeatureUsageStats, summary_text


def save_arrays(stats: FeatureUsageStats, path) -> Path:
    """All raw arrays in one compressed .npz (load with ``np.load(path)``)."""
    arrays = {
        "active": stats.active, "counts": stats.counts, "usage": stats.usage,
        "order": stats.order, "jaccard": stats.jaccard.astype(np.float32),
    }
    if stats.group_norms is not None:
        arrays["group_norms"] = stats.group_norms
    if stats.class_ids is not None:
        arrays["class_ids"] = stats.class_ids
    if stats.class_usage is not None:
        arrays["class_tasks"] = stats.class_tasks
        arrays["class_usage"] = stats.class_usage.astype(np.float32)
    arrays["meta_json"] = np.array(json.dumps(stats.meta, default=str))
    path = Path(path)
    np.savez_compressed(path, **arrays)
    return path


def save_tables(stats: FeatureUsageStats, out_dir, *, prefix: str = "") -> Dict[str, Path]:
    """``tasks.csv`` (one row per task) and ``features.csv`` (one row per feature, most used
    first); ``classes.csv`` when class ids are known."""
    out_dir = Path(out_dir)
    paths = {}
    p = out_dir / f"{prefix}tasks.csv"
    with p.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["task", "n_active", "fraction_active", "class_ids"])
        d = max(stats.n_features, 1)
        for t in range(stats.n_tasks):
            classes = "" if stats.class_ids is None else " ".join(map(str, stats.class_ids[t]))
            w.writerow([t, int(stats.counts[t]), f"{stats.counts[t] / d:.6g}", classes])
    paths["tasks"] = p

    p = out_dir / f"{prefix}features.csv"
    g = stats.group_norms
    if g is not None:
        active_norm_sum = np.where(stats.active, g, 0.0).sum(axis=0)
    n_used = stats.active.sum(axis=0)
    with p.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["rank", "feature", "n_tasks", "usage_frequency", "mean_group_norm_when_active"])
        for rank, feat in enumerate(stats.order):
            mean_norm = ""
            if g is not None and n_used[feat] > 0:
                mean_norm = f"{active_norm_sum[feat] / n_used[feat]:.6g}"
            w.writerow([rank, int(feat), int(n_used[feat]), f"{stats.usage[feat]:.6g}", mean_norm])
    paths["features"] = p

    if stats.class_usage is not None:
        p = out_dir / f"{prefix}classes.csv"
        with p.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["class_id", "n_tasks", "mean_features_used_by_its_tasks",
                        "features_used_by_all_its_tasks"])
            for c in range(stats.class_usage.shape[0]):
                n = int(stats.class_tasks[c])
                if n == 0:
                    continue
                row = stats.class_usage[c]
                w.writerow([c, n, f"{row.sum():.6g}", int((row >= 1).sum())])
        paths["classes"] = p
    return paths


def save_feature_usage(stats: FeatureUsageStats, out_dir, *, prefix: str = "") -> Dict[str, Path]:
    """Write everything (figures, arrays, tables, summary) under ``out_dir``.

    Returns ``{name: path}``: heatmap, active_counts, usage_curve, overlap (PNG), arrays
    (.npz), tasks, features[, classes] (CSV), summary (.txt).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = dict(save_figures(stats, out_dir, prefix=prefix))
    paths["arrays"] = save_arrays(stats, out_dir / f"{prefix}feature_usage.npz")
    paths.update(save_tables(stats, out_dir, prefix=prefix))
    p = out_dir / f"{prefix}summary.txt"
    p.write_text(summary_text(stats) + "\n")
    paths["summary"] = p
    return paths
