"""Synthetic multi-task data with known latent factors (Lachapelle et al., ICML 2023, sec. 5).

The world (fixed by ``seed``):
  z ~ p(z) in R^m        independent or correlated factors (Gaussian, or uniform marginals
                          through a Gaussian copula); correlation ``rho`` via a Toeplitz
                          (rho^|i-j|) or equicorrelation ((1-rho) I + rho 11^T) matrix
  x = g(z) (+ noise)     a fixed random invertible leaky-ReLU MLP: ``mixing_depth``
                          square layers ``h <- leaky(W h + b)`` with well-conditioned
                          W = U diag(s) V^T (s in [1, cond]), then one final linear map
                          to ``obs_dim >= m`` (injective); x standardised per coordinate

A task (drawn from a separate, seeded stream):
  S ⊂ {0..m-1}, |S| = k  uniformly at random
  y = argmax_c (z_S^T w_c + b_c), c < n_way   with random unit w_c; biases b_c ~ N(0,
                          bias_scale^2), 0 by default, so that the rule is exactly a linear
                          classifier without intercept on z_S (as the heads fit)
  support / query: n_shot / n_query points per class, drawn from p(z | y = c) by
  rejection from a pool of p(z) samples (a rule whose rarest class is too rare is redrawn)

So every task is, by construction, a linear multiclass problem on k of the m factors and
independent of the others (given z_S); the encoder only sees x. ``EpisodeBatch.factors``
holds the tasks' subsets as a bool mask [B, m].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np
import torch
from scipy.special import ndtr

from fewshot_sparse.data.episodes import EpisodeBatch
from fewshot_sparse.errors import ConfigError

LATENTS = ("gaussian", "uniform")
CORRELATIONS = ("toeplitz", "equicorrelation")

# Sub-streams of one seed, so that the world, training tasks, test tasks and evaluation
# points never share random numbers whatever the order in which they are drawn.
_WORLD, _TRAIN, _TEST, _POINTS = 0, 1, 2, 3


def latent_covariance(m: int, rho: float, kind: str = "toeplitz") -> np.ndarray:
    """Correlation matrix of the factors: Toeplitz rho^|i-j| or equicorrelation."""
    if kind == "toeplitz":
        if not -1.0 < rho < 1.0:
            raise ConfigError(f"toeplitz correlation needs -1 < rho < 1, got {rho}")
        idx = np.arange(m)
        return rho ** np.abs(idx[:, None] - idx[None, :]).astype(float)
    if kind == "equicorrelation":
        if not -1.0 / max(m - 1, 1) < rho < 1.0:
            raise ConfigError(f"equicorrelation with m={m} needs {-1.0 / max(m - 1, 1):.3f} "
                              f"< rho < 1, got {rho}")
        return (1.0 - rho) * np.eye(m) + rho * np.ones((m, m))
    raise ConfigError(f"unknown correlation kind {kind!r}; choose one of {list(CORRELATIONS)}")


def _well_conditioned(rng: np.random.Generator, n_out: int, n_in: int, cond: float) -> np.ndarray:
    """Random matrix U diag(s) V^T with singular values s in [1, cond], rescaled to have
    mean squared singular value 1 (so a layer roughly preserves the input scale)."""
    u, _ = np.linalg.qr(rng.standard_normal((n_out, n_out)))
    v, _ = np.linalg.qr(rng.standard_normal((n_in, n_in)))
    r = min(n_out, n_in)
    s = rng.uniform(1.0, cond, size=r)
    s = s / np.sqrt(np.mean(s ** 2))
    return u[:, :r] @ np.diag(s) @ v[:, :r].T


@dataclass
class TaskLatents:
    """Ground truth behind an EpisodeBatch of B tasks (numpy, for tests and analysis)."""

    support_z: np.ndarray  # [B, N*K, m]
    query_z: np.ndarray  # [B, N*Q, m]
    subsets: np.ndarray  # [B, k] int, sorted factor indices of each task
    weights: np.ndarray  # [B, k, N] the rule's class directions
    biases: np.ndarray  # [B, N]


class SyntheticTaskGenerator:
    """Seeded generator of few-shot tasks over known factors; see the module docstring.

    Everything is a function of ``seed`` and the call's own ``seed``/``rng``: the same
    arguments give bit-identical tensors.
    """

    def __init__(self, m: int = 10, k: int = 2, n_way: int = 5, n_shot: int = 5,
                 n_query: int = 15, *, obs_dim: Optional[int] = None, mixing_depth: int = 2,
                 leaky_slope: float = 0.2, cond: float = 2.0, latent: str = "gaussian",
                 correlation: float = 0.0, correlation_kind: str = "toeplitz",
                 noise: float = 0.0, bias_scale: float = 0.0, min_class_fraction: float = 0.04,
                 seed: int = 0):
        if not 1 <= k <= m:
            raise ConfigError(f"need 1 <= k <= m, got k={k}, m={m}")
        if n_way < 2 or n_shot < 1 or n_query < 1:
            raise ConfigError(f"need n_way >= 2, n_shot >= 1, n_query >= 1, "
                              f"got {n_way}, {n_shot}, {n_query}")
        if latent not in LATENTS:
            raise ConfigError(f"unknown latent {latent!r}; choose one of {list(LATENTS)}")
        if mixing_depth < 0:
            raise ConfigError(f"mixing_depth must be >= 0, got {mixing_depth}")
        if not 0.0 < leaky_slope <= 1.0:
            raise ConfigError(f"leaky_slope must be in (0, 1] for an invertible mixing, "
                              f"got {leaky_slope}")
        if cond < 1.0:
            raise ConfigError(f"cond must be >= 1, got {cond}")
        if noise < 0:
            raise ConfigError(f"noise must be >= 0, got {noise}")
        self.m, self.k, self.n_way, self.n_shot, self.n_query = m, k, n_way, n_shot, n_query
        self.obs_dim = m if obs_dim is None else int(obs_dim)
        if self.obs_dim < m:
            raise ConfigError(f"obs_dim must be >= m={m} for an invertible mixing, got {obs_dim}")
        self.mixing_depth, self.leaky_slope, self.cond = mixing_depth, leaky_slope, cond
        self.latent, self.correlation, self.correlation_kind = latent, correlation, correlation_kind
        self.noise, self.bias_scale = noise, bias_scale
        self.min_class_fraction = min_class_fraction
        self.seed = seed

        self.covariance = latent_covariance(m, correlation, correlation_kind)
        self._chol = np.linalg.cholesky(self.covariance)
        world = self._rng(_WORLD)
        self.layers = []  # [(W, b)], each W [m, m]
        for _ in range(mixing_depth):
            self.layers.append((_well_conditioned(world, m, m, cond),
                                0.1 * world.standard_normal(m)))
        self.readout = _well_conditioned(world, self.obs_dim, m, cond)  # [obs_dim, m]
        # Leaky ReLU of a unit-variance symmetric input has second moment (1 + a^2) / 2.
        self._gain = np.sqrt(2.0 / (1.0 + leaky_slope ** 2))
        pool = self.sample_latents(20000, world)
        raw = self._mix_raw(pool)
        self.x_mean = raw.mean(0)
        self.x_std = raw.std(0) + 1e-8

    # ----------------------------------------------------------------------------- world
    def _rng(self, stream: int, seed: int = 0) -> np.random.Generator:
        return np.random.default_rng([int(self.seed), stream, int(seed)])

    def sample_latents(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n draws of z, [n, m] float64, unit-variance marginals."""
        g = rng.standard_normal((n, self.m)) @ self._chol.T
        if self.latent == "gaussian":
            return g
        # Gaussian copula: uniform marginals on [-sqrt 3, sqrt 3] (variance 1); the
        # uniforms' correlation is (6/pi) asin(rho/2), slightly below rho.
        return np.sqrt(3.0) * (2.0 * ndtr(g) - 1.0)

    def _mix_raw(self, z: np.ndarray) -> np.ndarray:
        h = z
        a = self.leaky_slope
        for w, b in self.layers:
            h = h @ w.T + b
            h = self._gain * np.where(h > 0, h, a * h)
        return h @ self.readout.T

    def mix(self, z: np.ndarray, rng: Optional[np.random.Generator] = None) -> np.ndarray:
        """x = g(z), standardised; plus N(0, noise^2) if ``noise > 0`` (needs ``rng``)."""
        x = (self._mix_raw(z) - self.x_mean) / self.x_std
        if self.noise > 0:
            if rng is None:
                raise ValueError("mix() with noise > 0 needs an rng")
            x = x + self.noise * rng.standard_normal(x.shape)
        return x

    def sample_points(self, n: int, seed: int = 0):
        """n evaluation points: (z [n, m], x [n, obs_dim]) float32 tensors, deterministic."""
        rng = self._rng(_POINTS, seed)
        z = self.sample_latents(n, rng)
        x = self.mix(z, rng)
        return torch.from_numpy(z).float(), torch.from_numpy(x).float()

    # ----------------------------------------------------------------------------- tasks
    def _one_task(self, rng: np.random.Generator):
        m, k, n_way = self.m, self.k, self.n_way
        per_class = self.n_shot + self.n_query
        subset = np.sort(rng.choice(m, size=k, replace=False))
        # 1) the rule: draw candidate rules in blocks and keep the first whose rarest class
        #    has probability >= min_class_fraction (estimated on a shared probe pool).
        n_probe, n_cand = 500, 16
        probe = self.sample_latents(n_probe, rng)[:, subset]
        w = b = None
        for _ in range(40):
            cw = rng.standard_normal((n_cand, k, n_way))
            cw /= np.linalg.norm(cw, axis=1, keepdims=True)
            cb = self.bias_scale * rng.standard_normal((n_cand, n_way))
            scores = (probe @ cw.transpose(1, 0, 2).reshape(k, -1)).reshape(n_probe, n_cand, n_way)
            y = np.argmax(scores + cb, axis=2) + n_way * np.arange(n_cand)  # [P, R]
            counts = np.bincount(y.ravel(), minlength=n_cand * n_way).reshape(n_cand, n_way)
            frac = counts.min(1) / n_probe
            ok = np.flatnonzero(frac >= self.min_class_fraction)
            if ok.size:
                w, b = cw[ok[0]], cb[ok[0]]
                break
        if w is None:
            raise RuntimeError(f"could not draw a balanced {n_way}-way rule on k={k} factors; "
                               f"lower min_class_fraction or n_way")
        # 2) the points: per_class draws from p(z | y = c) by rejection from p(z).
        pool_size = int(np.ceil(2 * per_class / max(self.min_class_fraction, 1e-3)))
        got = [np.empty((0, m)) for _ in range(n_way)]
        for _ in range(100):
            z = self.sample_latents(pool_size, rng)
            y = np.argmax(z[:, subset] @ w + b, axis=1)
            got = [np.concatenate([g, z[y == c][: per_class - len(g)]]) for c, g in enumerate(got)]
            if min(len(g) for g in got) >= per_class:
                break
        else:
            raise RuntimeError("rejection sampling of class-conditional points did not finish")
        sup = np.concatenate([g[: self.n_shot] for g in got])
        qry = np.concatenate([g[self.n_shot:] for g in got])
        return subset, w, b, sup, qry

    def sample_tasks(self, n_tasks: int, rng: np.random.Generator, return_latents: bool = False):
        """``n_tasks`` tasks as one EpisodeBatch (and their TaskLatents if asked)."""
        subsets, ws, bs, zs, zq = [], [], [], [], []
        for _ in range(n_tasks):
            s, w, b, a, q = self._one_task(rng)
            subsets.append(s), ws.append(w), bs.append(b), zs.append(a), zq.append(q)
        support_z, query_z = np.stack(zs), np.stack(zq)
        xs = self.mix(support_z.reshape(-1, self.m), rng).reshape(n_tasks, -1, self.obs_dim)
        xq = self.mix(query_z.reshape(-1, self.m), rng).reshape(n_tasks, -1, self.obs_dim)
        n = self.n_way
        mask = np.zeros((n_tasks, self.m), dtype=bool)
        for i, s in enumerate(subsets):
            mask[i, s] = True
        batch = EpisodeBatch(
            support_images=torch.from_numpy(xs).float(),
            support_labels=torch.arange(n).repeat_interleave(self.n_shot).expand(n_tasks, -1).clone(),
            query_images=torch.from_numpy(xq).float(),
            query_labels=torch.arange(n).repeat_interleave(self.n_query).expand(n_tasks, -1).clone(),
            class_ids=torch.arange(n).expand(n_tasks, -1).clone(),
            n_way=n, n_shot=self.n_shot, n_query=self.n_query,
            factors=torch.from_numpy(mask),
        )
        if not return_latents:
            return batch
        return batch, TaskLatents(support_z, query_z, np.stack(subsets), np.stack(ws), np.stack(bs))

    def train_stream(self, batch_size: int, seed: int = 0) -> Iterator[EpisodeBatch]:
        """Endless, deterministic stream of training batches (seeded apart from the test set)."""
        rng = self._rng(_TRAIN, seed)
        while True:
            yield self.sample_tasks(batch_size, rng)

    def test_tasks(self, n_tasks: int, seed: int = 0, return_latents: bool = False):
        """A fixed set of test tasks (same arguments -> same tasks), disjoint stream from training."""
        return self.sample_tasks(n_tasks, self._rng(_TEST, seed), return_latents=return_latents)
