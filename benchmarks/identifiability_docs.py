"""Regenerate every number of docs/identifiability.md (one command, several hours of one
CPU core in all; the sections are independent and can run in parallel processes):

    python benchmarks/identifiability_docs.py --out runs/identifiability_docs
    python benchmarks/identifiability_docs.py --only shapes      # one section

Sections (each writes under ``--out/<section>/``; finished (condition, seed) runs are
read back; ``--seeds 1`` runs one seed, so processes can share a section):
  synthetic  the default preset (synthetic vectors, all heads)            -> grid.md
  harder     the synthetic world under harder conditions, 3 seeds each    -> grid.md
  shapes     the rendered shapes world (Conv-4), preset "shapes"          -> grid.md
  tolerance  the harder grid's base solved to a relative gap of 1e-2 and 1e-4 -> grid.md
  samples    the shapes world, one factor swept per row                    -> samples.png
  supports   which factors the training supports of the harder grid separate -> supports.md
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

from fewshot_sparse.identifiability.config import load_identifiability_config
from fewshot_sparse.identifiability.grid import run_grid
from fewshot_sparse.identifiability.report import plot_summary
from fewshot_sparse.identifiability.run import build_world
from fewshot_sparse.identifiability.shapes import SHAPES_FACTORS, render
from fewshot_sparse.identifiability.tasks import separated_factors

# The sections below were measured before the interior-point solver landed (FISTA to a
# relative duality gap of 1e-2); they pin that solver so that they regenerate as shown.
FISTA = ["solver_method=fista", "solver_tol=1e-2"]

# One condition changed at a time from a cheaper base than the default preset (5-way 5-shot,
# 100 steps of 8 tasks, to fit a shared 2-core machine): the group-Lasso head at
# lambda1 = 3 (between the values that worked in the default preset); the dense SVM
# (lambda1 = 0) at the base condition only.
HARDER_HEADS = ["lambda1_grid=[3]", "baselines=[]", "steps=100", "tasks_per_batch=8",
                "n_shot=5", "n_query=5"] + FISTA
HARDER = {
    "base": ["lambda1_grid=[0, 3]"],
    "rho=0.3": ["correlation=0.3"],
    "rho=0.6": ["correlation=0.6"],
    "supports=3": ["task_supports=3"],
    "supports=10": ["task_supports=10"],
    "k=3": ["k=3"],
    "k=4": ["k=4"],
    "noise=0.5": ["noise=0.5"],
    "m=20": ["m=20"],
    "depth=4": ["mixing_depth=4"],
}


def samples(out: str, columns: int = 8) -> None:
    """Row j: factor j swept from its lowest to its highest value, the others at 0."""
    import matplotlib.pyplot as plt  # here: only this section draws

    m = len(SHAPES_FACTORS)
    sweep = np.linspace(-np.sqrt(3), np.sqrt(3), columns)
    z = np.zeros((m * columns, m))
    for j in range(m):
        z[j * columns:(j + 1) * columns, j] = sweep
    img = render(z, 32).transpose(0, 2, 3, 1).reshape(m, columns, 32, 32, 3)
    grid = img.transpose(0, 2, 1, 3, 4).reshape(m * 32, columns * 32, 3)
    fig, ax = plt.subplots(figsize=(columns * 0.8 + 1.2, m * 0.8))
    ax.imshow(grid, interpolation="nearest")
    ax.set_yticks(np.arange(m) * 32 + 16, SHAPES_FACTORS)
    ax.set_xticks([])
    Path(out).mkdir(parents=True, exist_ok=True)
    fig.savefig(f"{out}/samples.png", dpi=100, bbox_inches="tight")
    plt.close(fig)


def supports(out: str) -> None:
    """Per seed: distinct training supports, factors any of them uses, factors separated."""
    lines = ["| condition | seed | supports | factors used | factors separated |",
             "|---|---|---|---|---|"]
    for name in ("supports=3", "supports=10", "base"):
        cfg = load_identifiability_config("default", HARDER_HEADS + HARDER[name])
        for seed in cfg.seeds:
            world = build_world(cfg, seed)
            pool = world.support_pool
            if pool is None:  # all C(m, k) subsets
                pool = np.array(list(itertools.combinations(range(cfg.m), cfg.k)))
            lines.append(f"| {name} | {seed} | {len(pool)} | {len(np.unique(pool))} | "
                         f"{int(separated_factors(pool, cfg.m).sum())} of {cfg.m} |")
    Path(out).mkdir(parents=True, exist_ok=True)
    Path(f"{out}/supports.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


SHAPES = {"shapes": FISTA}


def shapes(out: str, seeds, conditions=None) -> None:
    """The shapes grid, and the preset's figure over all finished seeds."""
    chosen = {k: v for k, v in SHAPES.items() if conditions is None or k in conditions}
    res = run_grid("shapes", chosen, out, only_seeds=seeds)
    rows = [r for r in res["rows"] if r["condition"] == "shapes"]
    if rows:
        plot_summary(rows, Path(out) / "identifiability.png",
                     load_identifiability_config("shapes", FISTA))


def harder(out: str, conditions, seeds) -> None:
    """The harder grid, and a figure: MCC and support F1 of the sparse head per condition."""
    import matplotlib.pyplot as plt  # here: only the figures need it

    chosen = {k: v for k, v in HARDER.items() if conditions is None or k in conditions}
    res = run_grid("default", chosen, out, overrides=HARDER_HEADS, only_seeds=seeds)
    sparse = [r for r in res["rows"] if r["head"] == "group_lasso_svm" and r["lambda1"]]
    dense = [r for r in res["rows"] if r["head"] == "group_lasso_svm" and r["lambda1"] == 0]
    if not sparse:
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    x = np.arange(len(sparse))
    for ax, (key, title) in zip(axes, (("mcc", "MCC"), ("support_f1", "task-support F1"))):
        ax.bar(x, [r[key] for r in sparse], yerr=[r[key + "_std"] for r in sparse], capsize=3,
               color="C0", label="group-Lasso SVM, lambda1 = 3")
        for r in dense:
            ax.axhline(r[key], ls="--", color="C1", label="dense SVM (lambda1 = 0), base")
        ax.set_xticks(x, [r["condition"] for r in sparse], rotation=30, ha="right")
        ax.set_title(f"{title} (mean ± std over seeds)")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3, axis="y")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(Path(out) / "harder.png", dpi=110)
    plt.close(fig)


SECTIONS = {
    "synthetic": lambda out, a: run_grid("default", {"default": FISTA}, out, only_seeds=a.seeds),
    "harder": lambda out, a: harder(out, a.conditions, a.seeds),
    "shapes": lambda out, a: shapes(out, a.seeds, a.conditions),
    "tolerance": lambda out, a: run_grid(
        "default", {"fista-1e-2": FISTA, "ipm-1e-4": ["solver_method=ipm",
                                                      "solver_tol=1e-4"]},
        out, overrides=HARDER_HEADS + ["lambda1_grid=[0, 3]"], only_seeds=a.seeds),
    "samples": lambda out, a: samples(out),
    "supports": lambda out, a: supports(out),
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/identifiability_docs")
    p.add_argument("--only", default=",".join(SECTIONS),
                   help=f"comma-separated sections ({', '.join(SECTIONS)})")
    p.add_argument("--conditions", default=None, type=lambda t: t.split(","),
                   help="harder, shapes: only these comma-separated conditions")
    p.add_argument("--seeds", default=None, type=lambda t: [int(x) for x in t.split(",")],
                   help="run only these seeds (others finished are read back): lets "
                        "separate processes share a section")
    a = p.parse_args(argv)
    for name in a.only.split(","):
        if name not in SECTIONS:
            print(f"identifiability_docs: error: unknown section {name!r}", file=sys.stderr)
            return 2
        SECTIONS[name](f"{a.out}/{name}", a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
