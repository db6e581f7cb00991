"""Few-shot tasks over known factors, for any world that maps factors to observations.

A world (``FactorWorld`` subclass) fixes ``m`` factors with a sampler ``sample_latents``
and an observation map ``observe`` (the synthetic mixing in generator.py, the renderer in
shapes.py). This module draws tasks on it, the same way for every world:

  S ⊂ {0..m-1}, |S| = k  uniformly at random, or (``task_supports = P > 0``) uniformly
                          from P distinct subsets fixed by the world seed (training only;
                          test tasks always draw from all subsets)
  y = argmax_c (z_S^T w_c + b_c), c < n_way   with random unit w_c; biases b_c ~ N(0,
                          bias_scale^2), 0 by default (an intercept-free linear rule)
  support / query: n_shot / n_query points per class, drawn from p(z | y = c) by
  rejection from a pool of p(z) samples (a rule whose rarest class is too rare is redrawn)

Seeded sub-streams of ``numpy.random.default_rng([seed, stream, call_seed])`` keep the
world, training tasks, test tasks and evaluation points apart. ``EpisodeBatch.factors``
holds each task's subset as a bool mask [B, m]. Docs: docs/identifiability.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from fewshot_sparse.data.episodes import EpisodeBatch
from fewshot_sparse.errors import ConfigError

# Sub-streams of one seed: never share random numbers whatever the order of the draws.
WORLD, TRAIN, TEST, POINTS, SUPPORTS = 0, 1, 2, 3, 4


def separated_factors(supports: np.ndarray, m: int) -> np.ndarray:
    """[m] bool: factor i is *separated* by the task supports [P, k] when the supports that
    contain it intersect in {i} alone. A sufficient-variability condition in the spirit of
    Lachapelle et al. (2023): a factor that no task uses, or that always appears together
    with the same other factor, cannot be told apart from it by sparsity."""
    supports = np.asarray(supports)
    out = np.zeros(m, dtype=bool)
    for i in range(m):
        rows = [set(s.tolist()) for s in supports if i in s]
        out[i] = bool(rows) and set.intersection(*rows) == {i}
    return out


@dataclass
class TaskLatents:
    """Ground truth behind an EpisodeBatch of B tasks (numpy, for tests and analysis)."""

    support_z: np.ndarray  # [B, N*K, m]
    query_z: np.ndarray  # [B, N*Q, m]
    subsets: np.ndarray  # [B, k] int, sorted factor indices of each task
    weights: np.ndarray  # [B, k, N] the rule's class directions
    biases: np.ndarray  # [B, N]


class FactorWorld:
    """Task sampling shared by all worlds. Subclasses set ``obs_shape`` and implement
    ``sample_latents(n, rng) -> [n, m]`` and ``observe(z, rng) -> [n, *obs_shape]``."""

    obs_shape: tuple = ()

    def __init__(self, m: int, k: int, n_way: int, n_shot: int, n_query: int, *,
                 bias_scale: float = 0.0, min_class_fraction: float = 0.04,
                 task_supports: int = 0, seed: int = 0):
        if not 1 <= k <= m:
            raise ConfigError(f"need 1 <= k <= m, got k={k}, m={m}")
        if n_way < 2 or n_shot < 1 or n_query < 1:
            raise ConfigError(f"need n_way >= 2, n_shot >= 1, n_query >= 1, "
                              f"got {n_way}, {n_shot}, {n_query}")
        n_subsets = math.comb(m, k)
        if task_supports < 0 or task_supports > n_subsets:
            raise ConfigError(f"task_supports must be in 0..C(m, k) = {n_subsets}, "
                              f"got {task_supports}")
        self.m, self.k, self.n_way, self.n_shot, self.n_query = m, k, n_way, n_shot, n_query
        self.bias_scale, self.min_class_fraction = bias_scale, min_class_fraction
        self.task_supports, self.seed = task_supports, seed
        self.support_pool = None  # [P, k] the training subsets, when restricted
        if task_supports:
            rng = self._rng(SUPPORTS)
            pool: set = set()
            while len(pool) < task_supports:
                pool.add(tuple(np.sort(rng.choice(m, size=k, replace=False))))
            self.support_pool = np.array(sorted(pool))

    def _rng(self, stream: int, seed: int = 0) -> np.random.Generator:
        return np.random.default_rng([int(self.seed), stream, int(seed)])

    def sample_latents(self, n: int, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def observe(self, z: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def sample_points(self, n: int, seed: int = 0):
        """n evaluation points: (z [n, m], x [n, *obs_shape]) float32 tensors, deterministic."""
        rng = self._rng(POINTS, seed)
        z = self.sample_latents(n, rng)
        x = self.observe(z, rng)
        return torch.from_numpy(z).float(), torch.from_numpy(np.asarray(x)).float()

    # ----------------------------------------------------------------------------- tasks
    def _one_task(self, rng: np.random.Generator, train: bool):
        m, k, n_way = self.m, self.k, self.n_way
        per_class = self.n_shot + self.n_query
        if train and self.support_pool is not None:
            subset = self.support_pool[rng.integers(len(self.support_pool))]
        else:
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

    def sample_tasks(self, n_tasks: int, rng: np.random.Generator, return_latents: bool = False,
                     train: bool = False):
        """``n_tasks`` tasks as one EpisodeBatch (and their TaskLatents if asked)."""
        subsets, ws, bs, zs, zq = [], [], [], [], []
        for _ in range(n_tasks):
            s, w, b, a, q = self._one_task(rng, train)
            subsets.append(s), ws.append(w), bs.append(b), zs.append(a), zq.append(q)
        support_z, query_z = np.stack(zs), np.stack(zq)
        xs = self.observe(support_z.reshape(-1, self.m), rng)
        xq = self.observe(query_z.reshape(-1, self.m), rng)
        n = self.n_way
        mask = np.zeros((n_tasks, self.m), dtype=bool)
        for i, s in enumerate(subsets):
            mask[i, s] = True
        batch = EpisodeBatch(
            support_images=torch.from_numpy(xs.reshape(n_tasks, -1, *self.obs_shape)).float(),
            support_labels=torch.arange(n).repeat_interleave(self.n_shot).expand(n_tasks, -1).clone(),
            query_images=torch.from_numpy(xq.reshape(n_tasks, -1, *self.obs_shape)).float(),
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
        rng = self._rng(TRAIN, seed)
        while True:
            yield self.sample_tasks(batch_size, rng, train=True)

    def test_tasks(self, n_tasks: int, seed: int = 0, return_latents: bool = False):
        """A fixed set of test tasks (same arguments -> same tasks), disjoint stream from training."""
        return self.sample_tasks(n_tasks, self._rng(TEST, seed), return_latents=return_latents)

    def test_batches(self, n_tasks: int, batch_size: int, seed: int = 0) -> Iterator[EpisodeBatch]:
        """The same kind of fixed test tasks, ``batch_size`` at a time (bounded memory)."""
        rng = self._rng(TEST, seed)
        for start in range(0, n_tasks, batch_size):
            yield self.sample_tasks(min(batch_size, n_tasks - start), rng)
