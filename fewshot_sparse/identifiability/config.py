"""The identifiability benchmark's settings: one flat dataclass, presets, overrides.

``load_identifiability_config(config, overrides)``: ``config`` is None (the default
preset), a preset name (``PRESETS``), a path to a JSON object of keys to change (it may
name ``"preset"`` to start from), a dict of the same, or an ``IdentifiabilityConfig``;
``overrides`` are ``key=value`` strings with JSON values (``seeds=[0,1]``, ``k=3``). Keys
and types are checked with the project's ``config.coerce_value``; values by
``check_identifiability_config``; every error is a ConfigError naming the key.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from fewshot_sparse.config import coerce_value, parse_value, read_json_object, split_assignment
from fewshot_sparse.errors import ConfigError

WORLDS = ("synthetic", "shapes")
BASELINES = ("ridge", "protonet", "svm_cs")
SOLVER_METHODS = ("ipm", "fista")


@dataclass
class IdentifiabilityConfig:
    # ---- the world and its tasks (generator.py, shapes.py, tasks.py)
    world: str = "synthetic"          # "synthetic" (vectors) or "shapes" (rendered images)
    m: int = 10                       # number of latent factors (shapes: always 7)
    k: int = 2                        # factors each task depends on
    n_way: int = 5
    n_shot: int = 10
    n_query: int = 10
    task_supports: int = 0            # distinct factor subsets of training tasks (0: all)
    obs_dim: int = 0                  # synthetic: dimension of x (0: m)
    mixing_depth: int = 2             # synthetic: leaky-ReLU layers of the mixing g
    latent: str = "gaussian"          # synthetic: "gaussian" or "uniform"
    correlation: float = 0.0          # rho of the factors' correlation matrix
    correlation_kind: str = "toeplitz"  # or "equicorrelation"
    noise: float = 0.0                # std of additive noise on x (shapes: on pixels)
    image_size: int = 32              # shapes: side of the square RGB images
    # ---- the encoder: [shapes: Conv-4 (encoders/conv4.py) ->] MLP (encoders/mlp.py)
    conv_width: int = 32              # shapes: channels of the Conv-4 blocks
    hidden: list[int] = field(default_factory=lambda: [64, 64])
    features: int = 0                 # feature dimension D (0: m)
    activation: str = "leaky_relu"
    output_norm: str = "batchnorm"    # fixes the feature scale, so lambda1 keeps its meaning
    # ---- the heads
    lambda1_grid: list[float] = field(default_factory=lambda: [0.0, 2.0, 5.0, 10.0])
    lambda2: float = 0.1
    solver_smoothing: float = 0.1     # dual smoothing (a smoothed hinge)
    solver_method: str = "ipm"        # "ipm" (interior point, ~10 Newton steps) or "fista"
    solver_tol: float = 1e-4          # relative duality gap (ipm: about as fast as fista at 1e-2)
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
    # About 67 minutes in one process on 2 cores shared with 4 other jobs (22 minutes with
    # one process per seed); much less on an idle machine.
    "shapes": {"world": "shapes", "m": 7, "k": 2, "n_way": 3, "n_shot": 5, "n_query": 3,
               "conv_width": 16, "hidden": [64], "lambda1_grid": [0.0, 3.0],
               "steps": 150, "tasks_per_batch": 4, "test_tasks": 48, "eval_points": 1000},
    # A few minutes on a 2-core CPU.
    "shapes_reduced": {"world": "shapes", "m": 7, "k": 2, "n_way": 3, "n_shot": 5,
                       "n_query": 3, "conv_width": 16, "hidden": [64],
                       "lambda1_grid": [0.0, 2.0], "baselines": ["ridge"], "steps": 60,
                       "tasks_per_batch": 8, "seeds": [0], "test_tasks": 32,
                       "eval_points": 1000, "solver_max_iter": 300},
}


def _apply(cfg: IdentifiabilityConfig, data: dict, where: str) -> IdentifiabilityConfig:
    hints = typing.get_type_hints(IdentifiabilityConfig)
    changes = {}
    for key, value in data.items():
        if key not in hints:
            raise ConfigError(f"{where}: unknown identifiability config key {key!r}; valid keys: "
                              f"{', '.join(f.name for f in dataclasses.fields(IdentifiabilityConfig))}")
        changes[key] = coerce_value(value, hints[key], key)
    return dataclasses.replace(cfg, **changes)


def load_identifiability_config(config=None, overrides: Sequence[str] = ()) -> IdentifiabilityConfig:
    """See the module docstring. Unknown keys, wrong types or bad values raise ConfigError."""
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
        key, value_text = split_assignment(text, "override", "key=value")
        value = parse_value(value_text)
        cfg = _apply(cfg, {key: value}, "override")
    check_identifiability_config(cfg)
    return cfg


def check_identifiability_config(cfg: IdentifiabilityConfig) -> None:
    if cfg.world not in WORLDS:
        raise ConfigError(f"world: unknown world {cfg.world!r}; choose one of {', '.join(WORLDS)}")
    if cfg.world == "shapes" and cfg.m != 7:
        raise ConfigError(f"m: the shapes world has 7 factors, got m={cfg.m}")
    if not 1 <= cfg.k <= cfg.m:
        raise ConfigError(f"k: need 1 <= k <= m, got k={cfg.k}, m={cfg.m}")
    if not 0 <= cfg.task_supports <= math.comb(cfg.m, cfg.k):
        raise ConfigError(f"task_supports: must be in 0..C(m, k) = {math.comb(cfg.m, cfg.k)}, "
                          f"got {cfg.task_supports}")
    for key in ("n_shot", "n_query", "steps", "tasks_per_batch", "test_tasks", "solver_max_iter",
                "conv_width"):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"{key}: must be >= 1, got {getattr(cfg, key)}")
    if cfg.n_way < 2:
        raise ConfigError(f"n_way: must be >= 2, got {cfg.n_way}")
    if cfg.eval_points < 20:
        raise ConfigError(f"eval_points: must be >= 20, got {cfg.eval_points}")
    if not cfg.seeds:
        raise ConfigError("seeds: must name at least one seed")
    if any(lam < 0 for lam in cfg.lambda1_grid):
        raise ConfigError(f"lambda1_grid: values must be >= 0, got {cfg.lambda1_grid}")
    unknown = [b for b in cfg.baselines if b not in BASELINES]
    if unknown:
        raise ConfigError(f"baselines: unknown {unknown}; choose from {', '.join(BASELINES)}")
    for key in ("lr", "lambda2", "ridge_lambda", "solver_tol"):
        if getattr(cfg, key) <= 0:
            raise ConfigError(f"{key}: must be > 0, got {getattr(cfg, key)}")
    if cfg.solver_method not in SOLVER_METHODS:
        raise ConfigError(f"solver_method: unknown {cfg.solver_method!r}; choose one of "
                          f"{', '.join(SOLVER_METHODS)}")
    if cfg.noise < 0:
        raise ConfigError(f"noise: must be >= 0, got {cfg.noise}")
