"""The factors' distribution p(z), shared by the synthetic and the rendered world.

Unit-variance marginals: Gaussian, or uniform on [-sqrt 3, sqrt 3] through a Gaussian
copula; correlation ``rho`` via a Toeplitz (rho^|i-j|) or equicorrelation
((1-rho) I + rho 11^T) matrix. Docs: docs/identifiability.md.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr

from fewshot_sparse.errors import ConfigError

LATENTS = ("gaussian", "uniform")
CORRELATIONS = ("toeplitz", "equicorrelation")


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


class LatentPrior:
    """p(z) in R^m: ``latent`` in LATENTS, correlation ``rho`` of kind in CORRELATIONS."""

    def __init__(self, m: int, latent: str = "gaussian", correlation: float = 0.0,
                 correlation_kind: str = "toeplitz"):
        if latent not in LATENTS:
            raise ConfigError(f"unknown latent {latent!r}; choose one of {list(LATENTS)}")
        self.m, self.latent = m, latent
        self.covariance = latent_covariance(m, correlation, correlation_kind)
        self._chol = np.linalg.cholesky(self.covariance)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n draws of z, [n, m] float64, unit-variance marginals."""
        g = rng.standard_normal((n, self.m)) @ self._chol.T
        if self.latent == "gaussian":
            return g
        # Gaussian copula: uniform marginals on [-sqrt 3, sqrt 3] (variance 1); the
        # uniforms' correlation is (6/pi) asin(rho/2), slightly below rho.
        return np.sqrt(3.0) * (2.0 * ndtr(g) - 1.0)
