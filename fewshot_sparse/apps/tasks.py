"""Train and evaluate on learn2learn task sets (or any indexable set of ``(data, labels)``
tasks) from the Python API, with this package's models, heads and training step.

    import learn2learn as l2l
    tasksets = l2l.vision.benchmarks.get_tasksets("mini-imagenet", train_ways=5, ...)
    model = build_model(load_config("demo_glyphs"))      # fewshot_sparse.model / .config
    stats = train_on_tasks(model, tasksets.train, n_shot=5, steps=1000, tasks_per_batch=8)
    result = evaluate_tasks(model, tasksets.test, n_shot=5, episodes=600)
    print(result.accuracy, result.ci95, result.active_fraction)

Task ``i`` is ``taskset[i]``: learn2learn draws it (from its own random state) or, for
a task set made with ``num_tasks``, returns the same task each time. Each task goes
through :func:`fewshot_sparse.data.learn2learn.episode_from_task`; ``transform`` maps an
EpisodeBatch (already on the model's device) to the network's input (normalisation,
augmentation), as ``augment`` does in ``meta_train_step``.
"""

from __future__ import annotations

import time
import warnings
from typing import Callable, Optional

import torch

from fewshot_sparse.data.learn2learn import episodes_from_tasks
from fewshot_sparse.engine.report import ShotResult
from fewshot_sparse.engine.run_episodes import run_episodes
from fewshot_sparse.engine.step import meta_train_step
from fewshot_sparse.errors import ConfigError
from fewshot_sparse.heads import ConvergenceWarning


def task_batches(taskset, *, n_shot: int, tasks_per_batch: int, n_batches: int,
                 start: int = 0):
    """EpisodeBatches of ``tasks_per_batch`` consecutive tasks, from task ``start`` on."""
    if tasks_per_batch < 1 or n_batches < 1:
        raise ConfigError(f"tasks_per_batch and n_batches must be >= 1, got "
                          f"{tasks_per_batch} and {n_batches}")
    for b in range(n_batches):
        first = start + b * tasks_per_batch
        yield episodes_from_tasks((taskset[first + j] for j in range(tasks_per_batch)),
                                  n_shot=n_shot)


def train_on_tasks(model: torch.nn.Module, taskset, *, n_shot: int, steps: int,
                   tasks_per_batch: int = 8, optimizer: Optional[torch.optim.Optimizer] = None,
                   lr: float = 0.01, label_smoothing: float = 0.0, accumulate: int = 1,
                   transform: Optional[Callable] = None, progress: bool = False) -> list[dict]:
    """``steps`` optimizer steps of ``meta_train_step`` on batches of tasks; returns each
    step's statistics (loss, accuracy, active_fraction, solver report). Default optimizer:
    SGD with Nesterov momentum 0.9 at ``lr``."""
    if optimizer is None:
        optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True)
    history = []
    for step, batch in enumerate(task_batches(taskset, n_shot=n_shot,
                                              tasks_per_batch=tasks_per_batch,
                                              n_batches=steps)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # counted in the stats
            stats = meta_train_step(model, batch, optimizer, label_smoothing=label_smoothing,
                                    augment=transform, accumulate=accumulate)
        history.append(stats)
        if progress:
            print(f"step {step + 1}/{steps}: loss {stats['loss']:.4f} accuracy "
                  f"{stats['accuracy']:.3f} active {stats['active_fraction']:.3f}", flush=True)
    return history


def evaluate_tasks(model: torch.nn.Module, taskset, *, n_shot: int, episodes: int,
                   tasks_per_batch: int = 8, transform: Optional[Callable] = None,
                   start: int = 0) -> ShotResult:
    """Accuracy (mean, 95% CI), features used and solver report over tasks
    ``start .. start + episodes - 1`` (``episodes`` must be a multiple of
    ``tasks_per_batch``)."""
    if episodes % tasks_per_batch:
        raise ConfigError(f"episodes ({episodes}) must be a multiple of tasks_per_batch "
                          f"({tasks_per_batch})")
    t0 = time.perf_counter()
    batches = task_batches(taskset, n_shot=n_shot, tasks_per_batch=tasks_per_batch,
                           n_batches=episodes // tasks_per_batch, start=start)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # counted in the result
        res = run_episodes(model, batches, normalize=transform)
    return ShotResult.from_results(n_shot, res, time.perf_counter() - t0)


__all__ = ["evaluate_tasks", "task_batches", "train_on_tasks"]
