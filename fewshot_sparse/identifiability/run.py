"""One benchmark run: build the world and the model from an IdentifiabilityConfig,
meta-train with the engine's step, evaluate with the engine's episode loop, score the
features with metrics.py. Docs: docs/identifiability.md.
"""

from __future__ import annotations

import math
import time
from typing import Optional

import numpy as np
import torch
from torch import nn

from fewshot_sparse.encoders import build_encoder
from fewshot_sparse.engine.run_episodes import run_episodes
from fewshot_sparse.engine.step import meta_train_step
from fewshot_sparse.heads import build_head
from fewshot_sparse.identifiability.config import IdentifiabilityConfig
from fewshot_sparse.identifiability.generator import SyntheticTaskGenerator
from fewshot_sparse.identifiability.metrics import dci, linear_r2, mcc, support_agreement
from fewshot_sparse.identifiability.shapes import ShapesWorld
from fewshot_sparse.identifiability.tasks import FactorWorld
from fewshot_sparse.model import EpisodicModel

SCORES = ("mcc", "mcc_spearman", "r2", "dci_d", "dci_c", "support_f1", "support_precision",
          "support_recall")


def build_world(cfg: IdentifiabilityConfig, seed: int) -> FactorWorld:
    """The config's world; ``seed`` fixes it (mixing or nothing) and its task streams."""
    common = dict(k=cfg.k, n_way=cfg.n_way, n_shot=cfg.n_shot, n_query=cfg.n_query,
                  correlation=cfg.correlation, correlation_kind=cfg.correlation_kind,
                  noise=cfg.noise, task_supports=cfg.task_supports, seed=seed)
    if cfg.world == "shapes":
        return ShapesWorld(image_size=cfg.image_size, **common)
    return SyntheticTaskGenerator(m=cfg.m, obs_dim=cfg.obs_dim or None,
                                  mixing_depth=cfg.mixing_depth, latent=cfg.latent, **common)


def build_encoder_for(cfg: IdentifiabilityConfig, world: FactorWorld) -> nn.Module:
    """[Conv-4 for images ->] MLP with a parameter-free output norm, from the registry."""
    features = cfg.features or cfg.m
    mlp = dict(hidden=list(cfg.hidden), out_features=features, activation=cfg.activation,
               output_norm=cfg.output_norm)
    if len(world.obs_shape) == 1:
        return build_encoder("mlp", in_features=world.obs_shape[0], **mlp)
    channels, height, width = world.obs_shape
    conv = build_encoder("conv4", in_channels=channels, hidden=cfg.conv_width)
    n_out = cfg.conv_width * (height // 16) * (width // 16)
    return nn.Sequential(conv, build_encoder("mlp", in_features=n_out, **mlp))


def build_head_for(cfg: IdentifiabilityConfig, name: str, lambda1: Optional[float]) -> nn.Module:
    if name == "group_lasso_svm":
        return build_head(name, lambda1=lambda1, lambda2=cfg.lambda2, tol=cfg.solver_tol,
                          max_iter=cfg.solver_max_iter, smoothing=cfg.solver_smoothing,
                          method=cfg.solver_method, learn_scale=cfg.learn_scale)
    if name == "ridge":
        return build_head(name, lam=cfg.ridge_lambda, learn_scale=cfg.learn_scale)
    return build_head(name, learn_scale=cfg.learn_scale)


def score_features(features: np.ndarray, z: np.ndarray, cfg: IdentifiabilityConfig,
                   active: Optional[np.ndarray], subsets: Optional[np.ndarray]) -> dict:
    """Every metric of metrics.py for features [n, d] of points with factors z [n, m];
    task-support agreement when the test tasks' ``active`` [T, d] and ``subsets`` [T, m]
    are given."""
    if not np.isfinite(features).all():
        return {key: math.nan for key in SCORES}
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


@torch.no_grad()
def encode_points(model: EpisodicModel, x: torch.Tensor, chunk: int = 500) -> np.ndarray:
    was_training = model.training
    model.eval()
    try:
        feats = torch.cat([model.encode(x[i:i + chunk]) for i in range(0, len(x), chunk)])
    finally:
        model.train(was_training)
    return feats.double().numpy()


def train_and_evaluate(cfg: IdentifiabilityConfig, head_name: str, lambda1: Optional[float],
                       seed: int, world: Optional[FactorWorld] = None, log=None) -> dict:
    """Meta-train one encoder with one head; evaluate it. Returns one result row."""
    world = world or build_world(cfg, seed)
    torch.manual_seed(seed)
    model = EpisodicModel(build_encoder_for(cfg, world), build_head_for(cfg, head_name, lambda1))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.steps)
    stream = world.train_stream(cfg.tasks_per_batch, seed=seed)
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

    # held-out tasks (accuracy, features used, supports) through the engine's loop
    test = list(world.test_batches(cfg.test_tasks, cfg.tasks_per_batch, seed=0))
    res = run_episodes(model, test)
    subsets = torch.cat([b.factors for b in test]).numpy()
    z, x = world.sample_points(cfg.eval_points, seed=seed)
    row = {"head": head_name, "lambda1": lambda1, "seed": seed,
           "accuracy": float(res.accuracy.mean()),
           "active_fraction": float(res.active.float().mean()),
           "train_loss": last.get("loss", math.nan), "train_seconds": train_s,
           "unconverged_solves": unconverged}
    row.update(score_features(encode_points(model, x), z.double().numpy(), cfg,
                              res.active.numpy(), subsets))
    return row


def input_row(cfg: IdentifiabilityConfig, seed: int, world: Optional[FactorWorld] = None) -> dict:
    """The raw observations scored as features (no encoder, no head). Images are reduced
    to their first D principal components (D = the encoder's feature count) first."""
    world = world or build_world(cfg, seed)
    z, x = world.sample_points(cfg.eval_points, seed=seed)
    x = x.double().flatten(1).numpy()
    if len(world.obs_shape) > 1:
        xc = x - x.mean(0)
        _, _, vt = np.linalg.svd(xc, full_matrices=False)
        x = xc @ vt[: cfg.features or cfg.m].T
    row = {"head": "input", "lambda1": None, "seed": seed, "accuracy": math.nan,
           "active_fraction": math.nan, "train_loss": math.nan, "train_seconds": 0.0,
           "unconverged_solves": 0.0}
    row.update(score_features(x, z.double().numpy(), cfg, None, None))
    return row
