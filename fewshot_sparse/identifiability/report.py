"""Tables and figures of the identifiability benchmark: mean and std over seeds per
(head, lambda1), a text table, CSV/JSON files (atomic writes) and the summary figure.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np

from fewshot_sparse.identifiability.config import IdentifiabilityConfig


def describe(cfg: IdentifiabilityConfig) -> str:
    """One line naming the world and its tasks."""
    world = (f"rendered shapes {cfg.image_size}px" if cfg.world == "shapes"
             else f"synthetic, mixing depth {cfg.mixing_depth}")
    extra = f", {cfg.task_supports} task supports" if cfg.task_supports else ""
    return (f"{world}: m={cfg.m} factors, k={cfg.k} per task, {cfg.n_way}-way "
            f"{cfg.n_shot}-shot, rho={cfg.correlation:g}, noise={cfg.noise:g}{extra}")


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


METRICS = ("accuracy", "active_fraction", "mcc", "mcc_spearman", "r2", "dci_d", "dci_c",
           "support_f1", "support_precision", "support_recall", "train_seconds")
SHOWN = (("accuracy", "acc"), ("active_fraction", "used"), ("mcc", "MCC"), ("r2", "R2"),
         ("dci_d", "DCI-D"), ("dci_c", "DCI-C"), ("support_f1", "supp-F1"))


def label(head: str, lambda1) -> str:
    return head if lambda1 is None else f"{head}(l1={lambda1:g})"


def summarize(rows: list[dict]) -> list[dict]:
    """Mean and std over seeds for each (head, lambda1), in first-seen order."""
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["head"], r["lambda1"]), []).append(r)
    out = []
    for (head, lam), rs in groups.items():
        s = {"head": head, "lambda1": lam, "n_seeds": len(rs)}
        for key in METRICS:
            vals = np.array([r[key] for r in rs], dtype=float)
            ok = vals[np.isfinite(vals)]
            s[key] = float(ok.mean()) if ok.size else math.nan
            s[key + "_std"] = float(ok.std()) if ok.size > 1 else (0.0 if ok.size else math.nan)
        out.append(s)
    return out


def format_table(summary: list[dict]) -> str:
    head = f"{'head':<28}" + "".join(f"{name:>15}" for _, name in SHOWN)
    lines = [head, "-" * len(head)]
    for s in summary:
        cells = []
        for key, _ in SHOWN:
            mean, std = s[key], s[key + "_std"]
            cells.append(f"{'-':>15}" if not math.isfinite(mean) else f"{mean:>8.3f} ±{std:5.3f}")
        lines.append(f"{label(s['head'], s['lambda1']):<28}" + "".join(cells))
    return "\n".join(lines)


def write_csv(path: Path, rows: list[dict]) -> None:
    keys = list(rows[0])
    fh = io.StringIO()
    w = csv.DictWriter(fh, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r[k] is None else r[k]) for k in keys})
    write_text_atomic(path, fh.getvalue())


def json_safe(obj):
    """NaN -> null (strict JSON), numpy scalars -> Python."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def plot_summary(summary: list[dict], path: Path, cfg: IdentifiabilityConfig) -> None:
    """MCC, accuracy, support F1 and features used against lambda1; dense heads dashed."""
    # Imported here: matplotlib costs about a second to import and only this function
    # needs it (the benchmark's tables and the tests of the other functions do not).
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gl = [s for s in summary if s["head"] == "group_lasso_svm"]
    others = [s for s in summary if s["head"] != "group_lasso_svm"]
    panels = (("mcc", "MCC (Pearson)"), ("accuracy", "test accuracy"),
              ("support_f1", "task-support F1"), ("active_fraction", "fraction of features used"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (key, title) in zip(axes, panels):
        if gl:
            lam = np.array([s["lambda1"] for s in gl])
            ax.errorbar(lam, [s[key] for s in gl], yerr=[s[key + "_std"] for s in gl],
                        marker="o", capsize=3, color=colors[0], label="group-Lasso SVM")
            ax.set_xscale("symlog", linthresh=max(min((l for l in lam if l > 0), default=1.0), 1e-6))
        for i, s in enumerate(others):
            if math.isfinite(s[key]):
                ax.axhline(s[key], ls="--", color=colors[(i + 1) % len(colors)], label=s["head"])
        ax.set_xlabel("lambda1 (0 = dense Crammer-Singer SVM)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{describe(cfg)}, {len(cfg.seeds)} seed(s)", fontsize=10)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    fig.savefig(tmp, dpi=110)
    tmp.replace(path)
    plt.close(fig)
