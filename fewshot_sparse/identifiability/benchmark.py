"""Does a sparse base learner recover the latent factors? (Lachapelle et al., ICML 2023)

``run_identifiability(config, overrides, out_dir)`` meta-trains an MLP encoder on synthetic
tasks with known factors (generator.py) once per (head, lambda1, seed) through the project's
own ``EpisodicModel`` and ``meta_train_step``, then measures on held-out tasks and points:

  test accuracy, mean fraction of features a task uses, MCC (Pearson), linear R^2,
  DCI disentanglement / completeness, and task-support agreement (F1) after the MCC matching

and writes ``results.csv`` (one row per run), ``summary.csv`` (mean and std over seeds),
``results.json`` (config + both tables) and ``identifiability.png`` under ``out_dir``.

Heads: ``group_lasso_svm`` over ``lambda1_grid`` (lambda1 = 0 is the dense Crammer-Singer
SVM) and the dense ``baselines`` (ridge, protonet). A row ``input`` scores the raw
observations x themselves (no training), the level any encoder starts from.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch

from fewshot_sparse.encoders.mlp import MLPEncoder
from fewshot_sparse.config import coerce_value, read_json_object
from fewshot_sparse.errors import ConfigError
from fewshot_sparse.identifiability.generator import SyntheticTaskGenerator
from fewshot_sparse.identifiability.metrics import dci, linear_r2, mcc, support_agreement


@dataclass
class IdentifiabilityConfig:
    # ---- the world and its tasks (generator.py)
    m: int = 10                       # number of latent factors
    k: int = 2                        # factors each task depends on
    n_way: int = 5
    n_shot: int = 10
    n_query: int = 10
    obs_dim: int = 0                  # dimension of x (0: m)
    mixing_depth: int = 2             # leaky-ReLU layers of the mixing g
    latent: str = "gaussian"          # "gaussian" or "uniform"
    correlation: float = 0.0          # rho of the factors' correlation matrix
    correlation_kind: str = "toeplitz"  # or "equicorrelation"
    noise: float = 0.0                # std of additive noise on x
    # ---- the encoder (encoders/mlp.py)
    hidden: list[int] = field(default_factory=lambda: [64, 64])
    features: int = 0                 # feature dimension D (0: m)
    activation: str = "leaky_relu"
    output_norm: str = "batchnorm"    # fixes the feature scale, so lambda1 keeps its meaning
    # ---- the heads
    lambda1_grid: list[float] = field(default_factory=lambda: [0.0, 2.0, 5.0, 10.0])
    lambda2: float = 0.1
    solver_smoothing: float = 0.1     # dual smoothing (a smoothed hinge): ~2x fewer iterations
    solver_tol: float = 1e-2          # relative duality gap; 1e-3 costs ~4x more per step
    solver_max_iter: int = 1000
    baselines: list[str] = field(default_factory=lambda: ["ridge", "protonet"])
    ridge_lambda: float = 1.0
    learn_scale: bool = True          # a learnt logit scale for every head (MetaOptNet)
    # ---- meta-training (engine/step.py)
    steps: int = 250
    tasks_per_batch: int = 16
    lr: float = 3e-3                  # Adam, cosine-annealed to 0 over ``steps``
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    threads: int = 1                  # torch.set_num_threads (0: leave as is); the models are
                                      # tiny, so extra OpenMP threads only add barrier waits
    # ---- evaluation
    test_tasks: int = 200
    eval_points: int = 4000
    dci_alpha: float = 0.01           # Lasso penalty of the DCI importance regressor


PRESETS = {
    "default": {},
    "reduced": {"m": 6, "k": 2, "n_way": 3, "n_shot": 5, "n_query": 5, "hidden": [32],
                "lambda1_grid": [0.0, 2.0], "baselines": ["ridge"], "steps": 30,
                "tasks_per_batch": 8, "seeds": [0], "test_tasks": 32, "eval_points": 1000,
                "solver_max_iter": 300},
}


# ----------------------------------------------------------------------------- config
def _apply(cfg: IdentifiabilityConfig, data: dict, where: str) -> IdentifiabilityConfig:
    hints = typing.get_type_hints(IdentifiabilityConfig)
    changes = {}
    for key, value in data.items():
        if key not in hints:
            raise ConfigError(f"{where}: unknown identifiability config key {key!r}; valid keys: "
                              f"{', '.join(f.name for f in dataclasses.fields(IdentifiabilityConfig))}")
        changes[key] = coerce_value(value, hints[key], key)
    return dataclasses.replace(cfg, **changes)


def _parse_override(text: str):
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} is not of the form key=value")
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def load_identifiability_config(config=None, overrides: Sequence[str] = ()) -> IdentifiabilityConfig:
    """``config``: None (the default preset), a preset name ("default", "reduced"), a path
    to a JSON object of keys to change (it may name ``"preset"`` to start from), a dict of
    the same, or an ``IdentifiabilityConfig``. ``overrides``: "key=value" strings (JSON
    values: ``seeds=[0,1]``, ``k=3``). Unknown keys or wrong types raise ConfigError."""
    if isinstance(config, IdentifiabilityConfig):
        cfg = config
    else:
        data, where = {}, "config"
        if isinstance(config, dict):
            data = dict(config)
        elif isinstance(config, (str, Path)):
            if str(config) in PRESETS:
                data = {"preset": str(config)}
            else:
                path = Path(config)
                if not path.is_file():
                    raise ConfigError(f"no identifiability config file {str(config)!r} and no "
                                      f"preset of that name; presets: {', '.join(PRESETS)}")
                data = read_json_object(path)
                where = str(path)
        elif config is not None:
            raise ConfigError(f"config must be a preset name, a path, a dict or an "
                              f"IdentifiabilityConfig, got {type(config).__name__}")
        preset = data.pop("preset", "default")
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; presets: {', '.join(PRESETS)}")
        cfg = _apply(_apply(IdentifiabilityConfig(), PRESETS[preset], "preset"), data, where)
    for text in overrides:
        key, value = _parse_override(text)
        cfg = _apply(cfg, {key: value}, "override")
    check_identifiability_config(cfg)
    return cfg


def check_identifiability_config(cfg: IdentifiabilityConfig) -> None:
    if not 1 <= cfg.k <= cfg.m:
        raise ConfigError(f"need 1 <= k <= m, got k={cfg.k}, m={cfg.m}")
    for key in ("n_shot", "n_query", "steps", "tasks_per_batch", "test_tasks", "solver_max_iter"):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"{key} must be >= 1, got {getattr(cfg, key)}")
    if cfg.n_way < 2:
        raise ConfigError(f"n_way must be >= 2, got {cfg.n_way}")
    if cfg.eval_points < 20:
        raise ConfigError(f"eval_points must be >= 20, got {cfg.eval_points}")
    if not cfg.seeds:
        raise ConfigError("seeds must name at least one seed")
    if any(lam < 0 for lam in cfg.lambda1_grid):
        raise ConfigError(f"lambda1_grid values must be >= 0, got {cfg.lambda1_grid}")
    unknown = [b for b in cfg.baselines if b not in ("ridge", "protonet", "svm_cs")]
    if unknown:
        raise ConfigError(f"unknown baselines {unknown}; choose from ridge, protonet, svm_cs")
    if cfg.lr <= 0 or cfg.lambda2 <= 0 or cfg.ridge_lambda <= 0:
        raise ConfigError("lr, lambda2 and ridge_lambda must be > 0")


# ----------------------------------------------------------------------------- one run
def _generator(cfg: IdentifiabilityConfig, seed: int) -> SyntheticTaskGenerator:
    return SyntheticTaskGenerator(
        m=cfg.m, k=cfg.k, n_way=cfg.n_way, n_shot=cfg.n_shot, n_query=cfg.n_query,
        obs_dim=cfg.obs_dim or None, mixing_depth=cfg.mixing_depth, latent=cfg.latent,
        correlation=cfg.correlation, correlation_kind=cfg.correlation_kind, noise=cfg.noise,
        seed=seed)


def _head(cfg: IdentifiabilityConfig, name: str, lambda1: Optional[float]):
    from fewshot_sparse.heads import build_head

    if name == "group_lasso_svm":
        return build_head(name, lambda1=lambda1, lambda2=cfg.lambda2, tol=cfg.solver_tol,
                          max_iter=cfg.solver_max_iter, smoothing=cfg.solver_smoothing,
                          learn_scale=cfg.learn_scale)
    if name == "ridge":
        return build_head(name, lam=cfg.ridge_lambda, learn_scale=cfg.learn_scale)
    return build_head(name, learn_scale=cfg.learn_scale)


def _scores(features: np.ndarray, z: np.ndarray, cfg: IdentifiabilityConfig,
            active: Optional[np.ndarray], subsets: Optional[np.ndarray]) -> dict:
    if not np.isfinite(features).all():
        return {key: math.nan for key in ("mcc", "mcc_spearman", "r2", "dci_d", "dci_c",
                                          "support_f1", "support_precision", "support_recall")}
    res = mcc(features, z)
    out = {"mcc": res.score, "mcc_spearman": mcc(features, z, "spearman").score,
           "r2": linear_r2(features, z)[0]}
    out["dci_d"], out["dci_c"], _ = dci(features, z, alpha=cfg.dci_alpha)
    if active is not None:
        sa = support_agreement(active, subsets, res.feature_of_factor)
        out.update(support_f1=sa["f1"], support_precision=sa["precision"],
                   support_recall=sa["recall"])
    else:
        out.update(support_f1=math.nan, support_precision=math.nan, support_recall=math.nan)
    return out


def train_and_evaluate(cfg: IdentifiabilityConfig, head_name: str, lambda1: Optional[float],
                       seed: int, gen: Optional[SyntheticTaskGenerator] = None,
                       log=None) -> dict:
    """Meta-train one encoder with one head; evaluate it. Returns one result row."""
    from fewshot_sparse.engine.step import meta_train_step
    from fewshot_sparse.model import EpisodicModel

    gen = gen or _generator(cfg, seed)
    torch.manual_seed(seed)
    encoder = MLPEncoder(gen.obs_dim, tuple(cfg.hidden), cfg.features or cfg.m,
                         activation=cfg.activation, output_norm=cfg.output_norm)
    model = EpisodicModel(encoder, _head(cfg, head_name, lambda1))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.steps)
    stream = gen.train_stream(cfg.tasks_per_batch, seed=seed)
    t0 = time.perf_counter()
    unconverged = 0.0
    last = {}
    for step in range(cfg.steps):
        last = meta_train_step(model, next(stream), opt)
        sched.step()
        unconverged += last["unconverged"]
        if log is not None and (step + 1) % max(1, cfg.steps // 5) == 0:
            log(f"    step {step + 1}/{cfg.steps} loss {last['loss']:.3f} "
                f"acc {last['accuracy']:.3f} active {last['active_fraction']:.2f}")
    train_s = time.perf_counter() - t0

    # held-out tasks: accuracy, features used, supports
    model.eval()
    test = gen.test_tasks(cfg.test_tasks, seed=0)
    correct, actives = [], []
    with torch.no_grad():
        for i in range(0, cfg.test_tasks, cfg.tasks_per_batch):
            sl = slice(i, i + cfg.tasks_per_batch)
            part = dataclasses.replace(
                test, support_images=test.support_images[sl], support_labels=test.support_labels[sl],
                query_images=test.query_images[sl], query_labels=test.query_labels[sl],
                class_ids=test.class_ids[sl], factors=test.factors[sl])
            out = model(part)
            correct.append((out.logits.argmax(-1) == part.query_labels).float().mean(1))
            actives.append(out.active)
        active = torch.cat(actives).numpy()
        z, x = gen.sample_points(cfg.eval_points, seed=seed)
        feats = model.encode(x).double().numpy()
    row = {"head": head_name, "lambda1": lambda1, "seed": seed,
           "accuracy": float(torch.cat(correct).mean()),
           "active_fraction": float(active.mean()),
           "train_loss": last.get("loss", math.nan), "train_seconds": train_s,
           "unconverged_solves": unconverged}
    row.update(_scores(feats, z.double().numpy(), cfg, active, test.factors.numpy()))
    return row


def input_row(cfg: IdentifiabilityConfig, seed: int, gen=None) -> dict:
    """The raw observations x scored as features (no encoder, no head)."""
    gen = gen or _generator(cfg, seed)
    z, x = gen.sample_points(cfg.eval_points, seed=seed)
    row = {"head": "input", "lambda1": None, "seed": seed, "accuracy": math.nan,
           "active_fraction": math.nan, "train_loss": math.nan, "train_seconds": 0.0,
           "unconverged_solves": 0.0}
    row.update(_scores(x.double().numpy(), z.double().numpy(), cfg, None, None))
    return row


# ----------------------------------------------------------------------------- tables
METRICS = ("accuracy", "active_fraction", "mcc", "mcc_spearman", "r2", "dci_d", "dci_c",
           "support_f1", "support_precision", "support_recall", "train_seconds")
SHOWN = (("accuracy", "acc"), ("active_fraction", "used"), ("mcc", "MCC"), ("r2", "R2"),
         ("dci_d", "DCI-D"), ("dci_c", "DCI-C"), ("support_f1", "supp-F1"))


def _label(head: str, lambda1) -> str:
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
        lines.append(f"{_label(s['head'], s['lambda1']):<28}" + "".join(cells))
    return "\n".join(lines)


def _write_csv(path: Path, rows: list[dict]) -> None:
    keys = list(rows[0])
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r[k] is None else r[k]) for k in keys})


def _json_safe(obj):
    """NaN -> null (strict JSON), numpy scalars -> Python."""
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def plot_summary(summary: list[dict], path: Path, cfg: IdentifiabilityConfig) -> None:
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
    fig.suptitle(f"m={cfg.m} factors, k={cfg.k} per task, {cfg.n_way}-way {cfg.n_shot}-shot, "
                 f"mixing depth {cfg.mixing_depth}, rho={cfg.correlation:g}, "
                 f"{len(cfg.seeds)} seed(s)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- entry point
def run_identifiability(config=None, overrides: Sequence[str] = (),
                        out_dir: Union[str, Path] = "runs/identifiability",
                        progress: bool = True) -> dict:
    """Run the benchmark; print and save the table and plot. Returns
    ``{"config", "rows", "summary", "table", "files"}``."""
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
        gen = _generator(cfg, seed)
        rows.append(input_row(cfg, seed, gen))
        for head, lam in runs:
            row = train_and_evaluate(cfg, head, lam, seed, gen, log=None)
            rows.append(row)
            if log:
                log(f"[seed {seed}] {_label(head, lam):<26} acc {row['accuracy']:.3f} "
                    f"used {row['active_fraction']:.2f} MCC {row['mcc']:.3f} "
                    f"R2 {row['r2']:.3f} supp-F1 {row['support_f1']:.3f} "
                    f"({row['train_seconds']:.0f} s, {time.perf_counter() - t0:.0f} s total)")
    summary = summarize(rows)
    table = format_table(summary)
    files = {"runs": out / "results.csv", "summary": out / "summary.csv",
             "json": out / "results.json", "plot": out / "identifiability.png"}
    _write_csv(files["runs"], rows)
    _write_csv(files["summary"], summary)
    files["json"].write_text(json.dumps(
        _json_safe({"config": dataclasses.asdict(cfg), "rows": rows, "summary": summary}),
        indent=2) + "\n")
    plot_summary(summary, files["plot"], cfg)
    if log:
        log("\n" + table)
        log(f"\nwrote {', '.join(str(p) for p in files.values())}")
    return {"config": cfg, "rows": rows, "summary": summary, "table": table,
            "files": {k: str(v) for k, v in files.items()}}
