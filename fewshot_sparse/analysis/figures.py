"""Figures of per-task feature usage (matplotlib, non-interactive Agg backend).

:func:`feature_usage_figures` returns matplotlib Figures by name (TensorBoard's
``SummaryWriter.add_figure`` takes them as they are); :func:`save_figures` writes PNGs.

Large problems stay readable: the task x feature heatmap keeps only features that some
task uses, sorted by usage, and averages blocks of columns (and rows) down to at most
``max_cols`` x ``max_rows`` cells, so D = 16,000 features still gives a legible image
(each cell then shows the fraction of active entries in its block).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict

import numpy as np

from fewshot_sparse.analysis.stats import FeatureUsageStats


def _plt():
    import matplotlib

    # Never open a window: use Agg unless a non-interactive backend is already active.
    if matplotlib.get_backend().lower() not in ("agg", "pdf", "svg", "ps", "cairo",
                                                "module://matplotlib_inline.backend_inline"):
        matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _block_mean(x: np.ndarray, max_rows: int, max_cols: int):
    """Average x [R, C] over contiguous blocks so it has at most max_rows x max_cols cells.

    Returns (reduced array, row block size, column block size)."""
    r, c = x.shape
    br = max(1, int(np.ceil(r / max_rows)))
    bc = max(1, int(np.ceil(c / max_cols)))
    if br == 1 and bc == 1:
        return x.astype(np.float32), 1, 1
    rr, cc = int(np.ceil(r / br)), int(np.ceil(c / bc))
    pad = np.full((rr * br, cc * bc), np.nan, dtype=np.float32)
    pad[:r, :c] = x
    with np.errstate(invalid="ignore"):
        out = np.nanmean(pad.reshape(rr, br, cc, bc), axis=(1, 3))
    return out, br, bc


def _title_suffix(stats: FeatureUsageStats) -> str:
    m = stats.meta
    parts = []
    if "head" in m:
        parts.append(str(m["head"]))
    if "way" in m and "shot" in m:
        parts.append(f"{m['way']}-way {m['shot']}-shot")
    return f" ({', '.join(parts)})" if parts else ""


def heatmap_figure(stats: FeatureUsageStats, *, max_rows: int = 400, max_cols: int = 800):
    """Tasks (rows, episode order) x ever-used features (columns, most used first)."""
    plt = _plt()
    used = stats.order[: stats.n_ever_used]
    fig, ax = plt.subplots(figsize=(11, 5.5), constrained_layout=True)
    if stats.n_tasks == 0 or used.size == 0:
        ax.text(0.5, 0.5, "no task uses any feature", ha="center", va="center",
                transform=ax.transAxes)
        ax.set_axis_off()
        ax.set_title("Active features per task" + _title_suffix(stats))
        return fig
    mat = stats.active[:, used]
    img, br, bc = _block_mean(mat, max_rows, max_cols)
    binned = br > 1 or bc > 1
    im = ax.imshow(img, aspect="auto", interpolation="nearest", cmap="viridis",
                   vmin=0.0, vmax=1.0,
                   extent=(-0.5, used.size - 0.5, stats.n_tasks - 0.5, -0.5))
    cb = fig.colorbar(im, ax=ax, fraction=0.04, pad=0.01)
    if binned:
        cb.set_label("fraction active in block")
    else:
        cb.set_ticks([0, 1])
        cb.set_ticklabels(["inactive", "active"])
    ax.set_xlabel(f"feature rank by usage (the {used.size} of {stats.n_features} "
                  f"features used by at least one task)")
    ax.set_ylabel("task (episode index)")
    note = f"; blocks of {br} task(s) x {bc} feature(s)" if binned else ""
    ax.set_title("Active features per task" + _title_suffix(stats) + note)
    return fig


def count_histogram_figure(stats: FeatureUsageStats):
    """Histogram of the number of active features per task."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
    counts = stats.counts
    if counts.size:
        lo, hi = int(counts.min()), int(counts.max())
        width = max(1, int(np.ceil((hi - lo + 1) / 50)))  # whole counts per bin
        bins = np.arange(lo - 0.5, hi + width + 0.5, width)
        ax.hist(counts, bins=bins, color="#3b75af", edgecolor="white")
        mean = float(counts.mean())
        ax.axvline(mean, color="#d62728", linestyle="--", label=f"mean {mean:.1f}")
        ax.legend()
    ax.set_xlabel(f"active features per task (of {stats.n_features})")
    ax.set_ylabel("number of tasks")
    ax.set_title("Active features per task" + _title_suffix(stats))
    return fig


def usage_curve_figure(stats: FeatureUsageStats):
    """Fraction of tasks using each feature, features sorted by decreasing usage."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
    curve = stats.usage[stats.order]
    ranks = np.arange(1, curve.size + 1)
    ax.plot(ranks, curve, color="#3b75af", linewidth=1.5)
    ax.fill_between(ranks, curve, alpha=0.2, color="#3b75af")
    if stats.n_ever_used < curve.size:
        ax.axvline(stats.n_ever_used, color="grey", linestyle=":",
                   label=f"{stats.n_ever_used} features ever used")
        ax.legend()
    if curve.size > 50:
        ax.set_xscale("log")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(1, max(curve.size, 2))
    ax.set_xlabel("feature rank by usage" + (" (log scale)" if curve.size > 50 else ""))
    ax.set_ylabel("fraction of tasks using the feature")
    ax.set_title("Feature usage across tasks" + _title_suffix(stats))
    ax.grid(alpha=0.3)
    return fig


def overlap_figure(stats: FeatureUsageStats, *, max_tasks: int = 200):
    """Pairwise Jaccard overlap of the active sets of (the first ``max_tasks``) tasks."""
    plt = _plt()
    t = min(stats.n_tasks, max_tasks)
    fig, ax = plt.subplots(figsize=(6.5, 5.5), constrained_layout=True)
    jac = stats.jaccard[:t, :t]
    im = ax.imshow(np.ma.masked_invalid(jac), cmap="magma", vmin=0.0, vmax=1.0,
                   interpolation="nearest")
    cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    cb.set_label("Jaccard overlap |A∩B| / |A∪B|")
    shown = f"first {t} of {stats.n_tasks} tasks" if t < stats.n_tasks else f"{t} tasks"
    ax.set_xlabel(f"task ({shown})")
    ax.set_ylabel("task")
    title = f"Overlap of active sets, mean {stats.mean_jaccard:.3f}"
    co = stats.class_overlap
    if co is not None:
        title += (f"\nsharing a class {co['share_mean']:.3f} vs none "
                  f"{co['none_mean']:.3f}")
    ax.set_title(title + _title_suffix(stats), fontsize=10)
    return fig


def feature_usage_figures(stats: FeatureUsageStats) -> Dict[str, "object"]:
    """The four figures by name: ``heatmap``, ``active_counts``, ``usage_curve``,
    ``overlap`` (matplotlib Figures; close them with ``plt.close(fig)`` when done)."""
    return {
        "heatmap": heatmap_figure(stats),
        "active_counts": count_histogram_figure(stats),
        "usage_curve": usage_curve_figure(stats),
        "overlap": overlap_figure(stats),
    }


def save_figures(stats: FeatureUsageStats, out_dir, *, prefix: str = "",
                 dpi: int = 120) -> Dict[str, Path]:
    """Write the figures as ``<out_dir>/<prefix><name>.png``; returns the paths."""
    plt = _plt()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, fig in feature_usage_figures(stats).items():
        path = out_dir / f"{prefix}{name}.png"
        fig.savefig(path, dpi=dpi)
        plt.close(fig)
        paths[name] = path
    return paths
