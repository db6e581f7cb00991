"""The lambda path's files: a CSV table, a JSON record and the accuracy-vs-features-used
figure (the paper's key figure), from a sweep report as a plain dict
(``fewshot_sparse.apps.sweep.SweepReport.to_dict()``)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from fewshot_sparse.analysis.figures import _plt
from fewshot_sparse.files import atomic_write_bytes

COLUMNS = ("shot", "head", "kind", "lambda1", "lambda_ratio", "mean_lambda1", "episodes",
           "accuracy", "ci95", "std", "active_fraction", "active_features", "n_features",
           "unconverged", "iterations_mean", "iterations_max", "seconds")


def sweep_csv(report: dict) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for p in report["points"]:
        w.writerow({k: "" if p.get(k) is None else p.get(k) for k in COLUMNS})
    return buf.getvalue()


def sweep_figure(report: dict):
    """Accuracy (95% CI bars) against the mean fraction of features used, one curve per
    shot along the path; reference heads as single markers."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    shots = sorted({p["shot"] for p in report["points"]})
    markers = {"svm_cs": "s", "ridge": "^", "protonet": "D"}
    for i, shot in enumerate(shots):
        color = f"C{i}"
        path = [p for p in report["points"] if p["shot"] == shot and p["kind"] == "path"]
        path.sort(key=lambda p: p["active_fraction"])
        ax.errorbar([100 * p["active_fraction"] for p in path],
                    [100 * p["accuracy"] for p in path],
                    yerr=[100 * p["ci95"] for p in path], color=color, marker="o", ms=3,
                    capsize=2, label=f"{report['head']} {shot}-shot")
        for p in report["points"]:
            if p["shot"] == shot and p["kind"] == "reference":
                ax.errorbar([100 * p["active_fraction"]], [100 * p["accuracy"]],
                            yerr=[100 * p["ci95"]], color=color,
                            marker=markers.get(p["head"], "x"), ms=6, ls="none", capsize=2,
                            label=f"{p['head']} {shot}-shot")
    ax.set_xlabel("features used per task (%)")
    ax.set_ylabel("query accuracy (%)")
    grid = "lambda1 / lambda_max" if report["grid"] == "lambda_ratio" else "lambda1"
    ax.set_title(f"accuracy vs sparsity along {grid}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def save_sweep(report: dict, out_dir) -> dict:
    """Write ``sweep.csv``, ``sweep.json`` and ``sweep.png`` into ``out_dir``; returns
    their paths by kind."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"csv": out / "sweep.csv", "json": out / "sweep.json", "png": out / "sweep.png"}
    atomic_write_bytes(files["csv"], sweep_csv(report).encode())
    record = {**report, "files": {k: str(v) for k, v in files.items()}}
    atomic_write_bytes(files["json"], (json.dumps(record, indent=1) + "\n").encode())
    fig = sweep_figure(report)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    atomic_write_bytes(files["png"], buf.getvalue())
    _plt().close(fig)
    return {k: str(v) for k, v in files.items()}


__all__ = ["COLUMNS", "save_sweep", "sweep_csv", "sweep_figure"]
