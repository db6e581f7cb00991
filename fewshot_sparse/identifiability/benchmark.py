"""Does a sparse base learner recover the latent factors? (Lachapelle et al., ICML 2023)

``run_identifiability(config, overrides, out_dir, world=...)`` meta-trains an encoder on
tasks with known factors once per (head, lambda1, seed) and measures on held-out tasks and
points: test accuracy, mean fraction of features a task uses, MCC (Pearson and Spearman),
linear R^2, DCI disentanglement / completeness, and task-support agreement after the MCC
matching. Worlds: ``synthetic`` vectors (generator.py, MLP encoder) or rendered
``shapes`` images (shapes.py, Conv-4 encoder); tasks from tasks.py for both.

The pieces, one file each: config.py (settings and presets), run.py (one run through the
engine's training step and episode loop), metrics.py (the scores), report.py (tables,
files, figure). It writes ``results.csv`` (one row per run), ``summary.csv`` (mean and std
over seeds), ``results.json`` (config and both tables) and ``identifiability.png``.

Heads: ``group_lasso_svm`` over ``lambda1_grid`` (lambda1 = 0 is the dense Crammer-Singer
SVM) and the dense ``baselines`` (ridge, protonet). A row ``input`` scores the raw
observations (images: their first principal components), the level an encoder starts from.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Optional, Sequence, Union

import torch

from fewshot_sparse.identifiability.config import (PRESETS, IdentifiabilityConfig,
                                                   load_identifiability_config)
from fewshot_sparse.identifiability.report import (format_table, json_safe, label,
                                                   plot_summary, summarize, write_csv,
                                                   write_text_atomic)
from fewshot_sparse.identifiability.run import build_world, input_row, train_and_evaluate

__all__ = ["IdentifiabilityConfig", "PRESETS", "load_identifiability_config",
           "run_identifiability", "train_and_evaluate", "input_row"]


def resolve_world(config, overrides: Sequence[str], world: Optional[str]):
    """``world`` (the CLI's --world): without a config, the world's own preset
    (``shapes`` -> preset "shapes"); with one, an override ``world=...``."""
    overrides = list(overrides)
    if world is None:
        return config, overrides
    if config is None:
        return ("default" if world == "synthetic" else world), overrides
    return config, overrides + [f"world={world}"]


def run_identifiability(config=None, overrides: Sequence[str] = (),
                        out_dir: Union[str, Path] = "runs/identifiability",
                        progress: bool = True, world: Optional[str] = None) -> dict:
    """Run the benchmark; print and save the table and plot. Returns
    ``{"config", "rows", "summary", "table", "files"}``."""
    config, overrides = resolve_world(config, overrides, world)
    cfg = load_identifiability_config(config, overrides)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    log = print if progress else None
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    runs = [("group_lasso_svm", float(lam)) for lam in cfg.lambda1_grid]
    runs += [(b, None) for b in cfg.baselines]
    rows = []
    t0 = time.perf_counter()
    for seed in cfg.seeds:
        w = build_world(cfg, seed)
        rows.append(input_row(cfg, seed, w))
        for head, lam in runs:
            row = train_and_evaluate(cfg, head, lam, seed, w, log=None)
            rows.append(row)
            if log:
                log(f"[seed {seed}] {label(head, lam):<26} acc {row['accuracy']:.3f} "
                    f"used {row['active_fraction']:.2f} MCC {row['mcc']:.3f} "
                    f"R2 {row['r2']:.3f} supp-F1 {row['support_f1']:.3f} "
                    f"({row['train_seconds']:.0f} s, {time.perf_counter() - t0:.0f} s total)")
    summary = summarize(rows)
    table = format_table(summary)
    files = {"runs": out / "results.csv", "summary": out / "summary.csv",
             "json": out / "results.json", "plot": out / "identifiability.png"}
    write_csv(files["runs"], rows)
    write_csv(files["summary"], summary)
    write_text_atomic(files["json"], json.dumps(
        json_safe({"config": dataclasses.asdict(cfg), "rows": rows, "summary": summary,
                   "seconds": time.perf_counter() - t0}), indent=2) + "\n")
    plot_summary(summary, files["plot"], cfg)
    if log:
        log("\n" + table)
        log(f"\nwrote {', '.join(str(p) for p in files.values())}")
    return {"config": cfg, "rows": rows, "summary": summary, "table": table,
            "files": {k: str(v) for k, v in files.items()}}
