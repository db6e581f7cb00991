"""Synthetic multi-task data with known latent factors (Lachapelle et al., ICML 2023, sec. 5).

The world (fixed by ``seed``):
  z ~ p(z) in R^m        independent or correlated factors (Gaussian, or uniform marginals
                          through a Gaussian copula); correlation ``rho`` via a Toeplitz
                          (rho^|i-j|) or equicorrelation ((1-rho) I + rho 11^T) matrix
  x = g(z) (+ noise)     a fixed random invertible leaky-ReLU MLP: ``mixing_depth``
                          square layers ``h <- leaky(W h + b)`` with well-conditioned
                          W = U diag(s) V^T (s in [1, cond]), then one final linear map
                          to ``obs_dim >= m`` (injective); x standardised per coordinate

Tasks on this world (subset S of k factors, a linear rule on z_S, class-conditional
support/query points) are drawn by ``FactorWorld`` in tasks.py, shared with the rendered
world of shapes.py.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from fewshot_sparse.errors import ConfigError
from fewshot_sparse.identifiability.latents import LatentPrior, latent_covariance
from fewshot_sparse.identifiability.tasks import WORLD, FactorWorld, TaskLatents

def _well_conditioned(rng: np.random.Generator, n_out: int, n_in: int, cond: float) -> np.ndarray:
    """Random matrix U diag(s) V^T with singular values s in [1, cond], rescaled to have
    mean squared singular value 1 (so a layer roughly preserves the input scale)."""
    u, _ = np.linalg.qr(rng.standard_normal((n_out, n_out)))
    v, _ = np.linalg.qr(rng.standard_normal((n_in, n_in)))
    r = min(n_out, n_in)
    s = rng.uniform(1.0, cond, size=r)
    s = s / np.sqrt(np.mean(s ** 2))
    return u[:, :r] @ np.diag(s) @ v[:, :r].T


class SyntheticTaskGenerator(FactorWorld):
    """Seeded generator of few-shot tasks over known factors; see the module docstring.

    Everything is a function of ``seed`` and the call's own ``seed``/``rng``: the same
    arguments give bit-identical tensors.
    """

    def __init__(self, m: int = 10, k: int = 2, n_way: int = 5, n_shot: int = 5,
                 n_query: int = 15, *, obs_dim: Optional[int] = None, mixing_depth: int = 2,
                 leaky_slope: float = 0.2, cond: float = 2.0, latent: str = "gaussian",
                 correlation: float = 0.0, correlation_kind: str = "toeplitz",
                 noise: float = 0.0, bias_scale: float = 0.0, min_class_fraction: float = 0.04,
                 task_supports: int = 0, seed: int = 0):
        super().__init__(m, k, n_way, n_shot, n_query, bias_scale=bias_scale,
                         min_class_fraction=min_class_fraction, task_supports=task_supports,
                         seed=seed)
        if mixing_depth < 0:
            raise ConfigError(f"mixing_depth must be >= 0, got {mixing_depth}")
        if not 0.0 < leaky_slope <= 1.0:
            raise ConfigError(f"leaky_slope must be in (0, 1] for an invertible mixing, "
                              f"got {leaky_slope}")
        if cond < 1.0:
            raise ConfigError(f"cond must be >= 1, got {cond}")
        if noise < 0:
            raise ConfigError(f"noise must be >= 0, got {noise}")
        self.obs_dim = m if obs_dim is None else int(obs_dim)
        if self.obs_dim < m:
            raise ConfigError(f"obs_dim must be >= m={m} for an invertible mixing, got {obs_dim}")
        self.mixing_depth, self.leaky_slope, self.cond = mixing_depth, leaky_slope, cond
        self.latent, self.correlation, self.correlation_kind = latent, correlation, correlation_kind
        self.noise = noise
        self.obs_shape = (self.obs_dim,)

        self.prior = LatentPrior(m, latent, correlation, correlation_kind)
        self.covariance = self.prior.covariance
        world = self._rng(WORLD)
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
    def sample_latents(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return self.prior.sample(n, rng)

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

    observe = mix


__all__ = ["SyntheticTaskGenerator", "TaskLatents", "latent_covariance"]
