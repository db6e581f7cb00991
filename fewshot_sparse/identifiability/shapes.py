"""A rendered world with known factors: small RGB images of one object on a background.

Seven factors (``SHAPES_FACTORS``), each a latent z_j with uniform marginal on
[-sqrt 3, sqrt 3] (independent by default; ``correlation`` as in latents.py), mapped
affinely to u_j in [0, 1] and then to a physical parameter:

  shape        superellipse exponent p = exp(lerp(log 0.7, log 4, u)): a concave
               diamond (p < 1), a diamond (1), an ellipse (2), a rounded rectangle (4)
  object_hue   hue lerp(0, 0.75, u) at saturation 0.85, value 0.95 (no hue wrap-around)
  bg_hue       hue lerp(0, 0.75, u) at saturation 0.5, value 0.35 (darker than any object)
  scale        semi-major axis lerp(0.25, 0.5, u) (image half-width = 1); aspect 0.55
  orientation  angle lerp(-70, 70, u) degrees; the object is elongated, so its 180-degree
               symmetry never folds the range
  x, y         centre lerp(-0.45, 0.45, u)

The renderer is pure numpy, vectorised over images: pixel centres on [-1, 1]^2, the
superellipse's radial function f = (|x'/a|^p + |y'/b|^p)^(1/p) in the object frame, and an
anti-aliased coverage clip(0.5 + (1 - f) * a / pixel, 0, 1). Same z, same image, bit for bit.
Images are [n, 3, size, size] float32 in [0, 1] minus 0.5, plus N(0, noise^2) pixel noise
when ``noise > 0``. Tasks are drawn by ``FactorWorld`` (tasks.py), as on the synthetic world.
"""

from __future__ import annotations

import numpy as np

from fewshot_sparse.errors import ConfigError
from fewshot_sparse.identifiability.latents import LatentPrior
from fewshot_sparse.identifiability.tasks import FactorWorld

SHAPES_FACTORS = ("shape", "object_hue", "bg_hue", "scale", "orientation", "x", "y")
_SQRT3 = np.sqrt(3.0)


def hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """[n] hue, saturation, value in [0, 1] -> [n, 3] RGB in [0, 1] (the standard hexcone)."""
    out = []
    for shift in (5.0, 3.0, 1.0):  # R, G, B
        c = (shift + 6.0 * h) % 6.0
        out.append(v - v * s * np.clip(np.minimum(c, 4.0 - c), 0.0, 1.0))
    return np.stack(out, axis=-1)


def factor_parameters(z: np.ndarray) -> dict:
    """[n, 7] latents -> the physical parameters the renderer uses ([n] arrays)."""
    u = np.clip((np.asarray(z, dtype=np.float64) + _SQRT3) / (2 * _SQRT3), 0.0, 1.0)

    def lerp(lo, hi, t):
        return lo + (hi - lo) * t

    return {"p": np.exp(lerp(np.log(0.7), np.log(4.0), u[:, 0])),
            "object_hue": lerp(0.0, 0.75, u[:, 1]), "bg_hue": lerp(0.0, 0.75, u[:, 2]),
            "a": lerp(0.25, 0.5, u[:, 3]), "theta": np.deg2rad(lerp(-70.0, 70.0, u[:, 4])),
            "cx": lerp(-0.45, 0.45, u[:, 5]), "cy": lerp(-0.45, 0.45, u[:, 6])}


def render(z: np.ndarray, size: int = 32, chunk: int = 512) -> np.ndarray:
    """Images [n, 3, size, size] float32 in [0, 1] of the factors ``z`` [n, 7]."""
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 2 or z.shape[1] != len(SHAPES_FACTORS):
        raise ValueError(f"render: expected factors [n, {len(SHAPES_FACTORS)}], got {z.shape}")
    pixel = 2.0 / size
    grid = -1.0 + pixel * (np.arange(size) + 0.5)
    gy, gx = np.meshgrid(grid, grid, indexing="ij")  # [size, size], y down the rows
    out = np.empty((z.shape[0], 3, size, size), dtype=np.float32)
    for start in range(0, z.shape[0], chunk):
        par = factor_parameters(z[start:start + chunk])
        col = lambda v: v[:, None, None]  # noqa: E731 - broadcast [n] over the image
        dx, dy = gx[None] - col(par["cx"]), gy[None] - col(par["cy"])
        cos, sin = col(np.cos(par["theta"])), col(np.sin(par["theta"]))
        a = col(par["a"])
        b, p = 0.55 * a, col(par["p"])
        xr, yr = cos * dx + sin * dy, -sin * dx + cos * dy
        f = ((np.abs(xr) / a) ** p + (np.abs(yr) / b) ** p) ** (1.0 / p)
        cover = np.clip(0.5 + (1.0 - f) * b / pixel, 0.0, 1.0)[:, None]  # [n, 1, H, W]
        n = len(par["p"])
        fg = hsv_to_rgb(par["object_hue"], np.full(n, 0.85), np.full(n, 0.95))
        bg = hsv_to_rgb(par["bg_hue"], np.full(n, 0.5), np.full(n, 0.35))
        img = cover * fg[:, :, None, None] + (1.0 - cover) * bg[:, :, None, None]
        out[start:start + chunk] = img
    return out


class ShapesWorld(FactorWorld):
    """Few-shot tasks over the seven factors of rendered images (see the module docstring);
    the task arguments are FactorWorld's."""

    def __init__(self, k: int = 2, n_way: int = 5, n_shot: int = 5, n_query: int = 15, *,
                 image_size: int = 32, correlation: float = 0.0,
                 correlation_kind: str = "toeplitz", noise: float = 0.0,
                 bias_scale: float = 0.0, min_class_fraction: float = 0.04,
                 task_supports: int = 0, seed: int = 0):
        super().__init__(len(SHAPES_FACTORS), k, n_way, n_shot, n_query, bias_scale=bias_scale,
                         min_class_fraction=min_class_fraction, task_supports=task_supports,
                         seed=seed)
        if not 8 <= image_size <= 128:
            raise ConfigError(f"image_size must be in 8..128, got {image_size}")
        if noise < 0:
            raise ConfigError(f"noise must be >= 0, got {noise}")
        self.image_size, self.noise = int(image_size), float(noise)
        self.obs_shape = (3, self.image_size, self.image_size)
        self.prior = LatentPrior(self.m, "uniform", correlation, correlation_kind)
        self.factor_names = SHAPES_FACTORS

    def sample_latents(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return self.prior.sample(n, rng)

    def observe(self, z: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        x = render(z, self.image_size) - np.float32(0.5)
        if self.noise > 0:
            x = x + (self.noise * rng.standard_normal(x.shape)).astype(np.float32)
        return x
