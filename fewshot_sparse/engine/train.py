"""The training loop: SGD (Nesterov) on batches of episodes, a per-epoch learning-rate
schedule, validation on fixed episodes, best/last checkpoints, TensorBoard, resume, DDP.

Run directory (``config.out_dir``)::

    config.json         the run's configuration
    val_episodes.*      the fixed validation episodes (drawn once, reused by resume)
    last.pt, best.pt    checkpoints after the latest epoch / the best validation epoch
    tb/                 TensorBoard event files

Reproducibility: episodes come from the data loader as a pure function of
(seed, batch index), so an epoch's batches are indices [epoch * n, (epoch + 1) * n); the
augmentation generator and torch's global generator (DropBlock, dropout) are reseeded at
the start of every epoch from (seed, epoch, rank). Resuming from ``last.pt`` (written at
every epoch end) therefore repeats exactly what an uninterrupted run does, and a run
killed mid-epoch loses only that epoch.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from fewshot_sparse.config import Config
from fewshot_sparse.data import (MANIFEST, EpisodeAugment, EpisodeSampler, Normalize,
                                 episode_loader, open_prepared, prepare)
from fewshot_sparse.engine import distributed
from fewshot_sparse.engine.checkpoint import load_checkpoint, save_checkpoint
from fewshot_sparse.engine.convergence import warn_unconverged
from fewshot_sparse.engine.protocol import EpisodeProtocol, fixed_episodes, protocol_batches
from fewshot_sparse.engine.run_episodes import run_episodes
from fewshot_sparse.engine.step import meta_train_step
from fewshot_sparse.engine.tb_logging import TBLogger, log_feature_usage
from fewshot_sparse.errors import CheckpointError, ConfigError, FewshotSparseError
from fewshot_sparse.files import check_writable
from fewshot_sparse.model import build_model, check_input_shape, check_model_config

LAST, BEST, CONFIG, VAL_EPISODES = "last.pt", "best.pt", "config.json", "val_episodes.npz"


def derived_seed(*parts: int) -> int:
    """A 63-bit seed mixing ``parts`` (numpy's SeedSequence, no global state)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0]
               >> np.uint64(1))


def lr_factor(epoch_number: int, milestones, factors) -> float:
    """Factor of the base learning rate in 1-based epoch ``epoch_number``."""
    factor = 1.0
    for m, f in zip(milestones, factors):
        if epoch_number >= m:
            factor = f
    return factor


def make_optimizer(model: torch.nn.Module, config: Config):
    t = config.train
    optimizer = torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum,
                                nesterov=t.nesterov, weight_decay=t.weight_decay)
    # Stepped once per epoch; LambdaLR's epoch counter is 0-based.
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda e: lr_factor(e + 1, t.lr_milestones, t.lr_factors))
    return optimizer, scheduler


def train(config: Config, *, resume: bool = False, progress: bool = True) -> Path:
    """Train the model ``config`` names; returns the run directory (``config.out_dir``).

    resume: continue the run in ``out_dir`` from its ``last.pt``. Without it, an
    ``out_dir`` that already holds a run is refused rather than overwritten.
    Under ``torchrun`` the processes train data-parallel (see engine/distributed.py).
    """
    check_model_config(config)  # bad head/encoder values: one line, before any data work
    ranks, device = distributed.setup(config.train.device)
    try:
        return _Trainer(config, ranks, device, progress).run(resume)
    finally:
        distributed.cleanup(ranks)


class _Trainer:
    def __init__(self, config: Config, ranks, device, progress: bool):
        self.config, self.ranks, self.device, self.progress = config, ranks, device, progress
        self.run_dir = Path(config.out_dir)

    def run(self, resume: bool) -> Path:
        cfg, ranks, t = self.config, self.ranks, self.config.train
        last = self.run_dir / LAST
        if resume and not last.is_file():
            raise CheckpointError(f"nothing to resume: no {last}")
        if not resume and last.exists():
            raise FewshotSparseError(
                f"{self.run_dir} already holds a run ({last}); resume it or choose "
                f"another out_dir")
        if ranks.is_main:  # a read-only or unwritable run folder: said before the work
            check_writable(self.run_dir)
        data = TrainingData(cfg, ranks)
        torch.manual_seed(t.seed)  # the initial weights (identical on every rank)
        model = build_model(cfg).to(self.device)
        if t.channels_last and self.device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        optimizer, scheduler = make_optimizer(model, cfg)
        start_epoch, step, best = 0, 0, -math.inf
        if resume:
            state = load_checkpoint(last, model=model, encoder=cfg.encoder.name,
                                    optimizer=optimizer, scheduler=scheduler,
                                    map_location=self.device)
            start_epoch, step = state["epoch"], state["global_step"]
            if state.get("best_accuracy") is not None:
                best = state["best_accuracy"]
        if ranks.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            cfg.save(self.run_dir / CONFIG)
        val_batches = data.val_batches(self.run_dir / VAL_EPISODES) if ranks.is_main else None
        ddp_model = distributed.wrap(model, ranks, self.device)
        logger = TBLogger(self.run_dir / "tb" if ranks.is_main else None,
                          purge_step=step if resume else None)
        n_batches = t.episodes_per_epoch // t.tasks_per_batch
        mine = distributed.my_batches(n_batches, ranks)
        try:
            for epoch in range(start_epoch, t.epochs):
                torch.manual_seed(derived_seed(t.seed, epoch, ranks.rank))
                step = self._train_epoch(ddp_model, optimizer, data, epoch, n_batches, mine,
                                         step, logger)
                scheduler.step()
                validate = (epoch + 1) % cfg.val.every == 0 or epoch + 1 == t.epochs
                acc = None
                if validate and ranks.is_main:
                    acc = self._validate(model, data, val_batches, epoch, step, logger)
                if ranks.is_main:
                    is_best = acc is not None and acc > best
                    best = acc if is_best else best
                    kw = dict(model=model, epoch=epoch + 1, global_step=step,
                              config=cfg.to_dict(), encoder=cfg.encoder.name,
                              optimizer=optimizer, scheduler=scheduler,
                              best_accuracy=None if best == -math.inf else best,
                              extra=data.checkpoint_record())
                    save_checkpoint(self.run_dir / LAST, **kw)
                    if is_best:
                        save_checkpoint(self.run_dir / BEST, **kw)
                    logger.flush()
                distributed.barrier(ranks)
        finally:
            logger.close()
        return self.run_dir

    # --------------------------------------------------------------------------- loops
    def _train_epoch(self, model, optimizer, data, epoch, n_batches, mine, step, logger):
        t, ranks = self.config.train, self.ranks
        augment = data.train_augment(derived_seed(t.seed, epoch, ranks.rank, 1), self.device)
        batches = data.train_batches([epoch * n_batches + b for b in mine],
                                     pin_memory=self.device.type == "cuda")
        bar = None
        if self.progress and ranks.is_main:
            bar = tqdm(total=len(mine), desc=f"epoch {epoch + 1}/{t.epochs}", leave=True,
                       dynamic_ncols=True)
        window: dict[str, list] = {}
        lr = optimizer.param_groups[0]["lr"]
        t0 = time.perf_counter()
        unconverged, gap_max = 0, 0.0
        for batch in batches:
            stats = meta_train_step(model, batch, optimizer, label_smoothing=t.label_smoothing,
                                    augment=augment, amp=t.amp, accumulate=t.accumulate)
            step += 1
            unconverged += int(stats["unconverged"])
            gap_max = max(gap_max, stats["gap_max"])
            for k, v in stats.items():
                window.setdefault(k, []).append(v)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{stats['loss']:.3f}", acc=f"{stats['accuracy']:.3f}",
                                active=f"{stats['active_fraction']:.3f}",
                                unconverged=unconverged, refresh=False)
            if step % t.log_every == 0:
                means = {k: max(v) if k == "gap_max" else sum(v) / len(v)
                         for k, v in window.items()}
                means = distributed.all_mean(means, ranks, self.device)
                logger.scalars("train", means, step)
                logger.scalars("", {"lr": lr}, step)
                window = {}
        if bar is not None:
            bar.close()
        warn_unconverged(f"training epoch {epoch + 1} (rank {ranks.rank})", unconverged,
                         len(mine) * t.tasks_per_batch, gap_max)
        if ranks.is_main and self.progress:
            n_eps = len(mine) * t.tasks_per_batch * ranks.world_size
            print(f"epoch {epoch + 1}: {n_eps / (time.perf_counter() - t0):.1f} episodes/s, "
                  f"{unconverged} training tasks unconverged (this rank)", flush=True)
        return step

    def _validate(self, model, data, val_batches, epoch, step, logger) -> float:
        results = run_episodes(model, val_batches, normalize=data.normalize,
                               amp=self.config.train.amp)
        solver = results.solver()
        if solver:
            warn_unconverged(f"validation after epoch {epoch + 1}", solver["unconverged"],
                             results.n_episodes, solver["max_gap"])
        summary = results.summary()
        logger.scalars("val", summary, step)
        v = self.config.val
        log_feature_usage(logger, results, step, meta={
            "split": "val", "way": v.n_way, "shot": v.n_shot, "epoch": epoch + 1})
        if self.progress:
            unconverged = int(summary.get("unconverged", 0))
            print(f"epoch {epoch + 1}: val accuracy {summary['accuracy']:.4f} "
                  f"({results.n_episodes} episodes, {v.n_way}-way {v.n_shot}-shot), "
                  f"active fraction {summary['active_fraction']:.3f}"
                  + (f", {unconverged} tasks unconverged" if unconverged else ""), flush=True)
        return summary["accuracy"]


# ------------------------------------------------------------------------------- data

class TrainingData:
    """The prepared cache a config names (built first if it is the glyph set), the
    training sampler, augmentation and evaluation normalisation."""

    def __init__(self, cfg: Config, ranks):
        self.cfg, d, t = cfg, cfg.data, cfg.train
        root = Path(d.root).expanduser()
        if not (root / MANIFEST).is_file() and d.dataset == "glyphs":
            if ranks.is_main:
                prepare("glyphs", None, root, image_size=d.image_size, progress=False)
            distributed.barrier(ranks)
        splits = open_prepared(root)
        for key in ("train_split", "val_split"):
            if getattr(d, key) not in splits:
                raise ConfigError(f"data.{key}: {root} has no split {getattr(d, key)!r} "
                                  f"(it has {', '.join(splits)})")
        self.train_split, self.val_split = splits[d.train_split], splits[d.val_split]
        h, w, c = self.train_split.image_shape
        check_input_shape(cfg, (c, h, w), root)
        h, w, _ = self.train_split.image_shape
        if (h, w) != (d.image_size, d.image_size):
            raise ConfigError(f"data.image_size is {d.image_size} but {root} holds {h}x{w} "
                              f"images; prepare it at that size or change data.image_size")
        self.mean, self.std = self.train_split.mean, self.train_split.std
        self.normalize = Normalize(self.mean, self.std)
        self.sampler = EpisodeSampler(
            self.train_split, n_way=t.n_way, n_shot=t.n_shot, n_query=t.n_query,
            tasks_per_batch=t.tasks_per_batch,
            n_batches=t.epochs * (t.episodes_per_epoch // t.tasks_per_batch), seed=t.seed)

    def checkpoint_record(self) -> dict:
        """What evaluation needs to feed other data as this model saw its own: the input
        shape (C, H, W), the normalisation statistics and the training data's hash."""
        h, w, c = self.train_split.image_shape
        return {"input_shape": [c, h, w],
                "normalize": {"mean": list(self.mean), "std": list(self.std)},
                "data_hash": self.train_split.content_hash}

    def train_batches(self, numbers: list[int], pin_memory: bool = False):
        """Batches ``numbers`` of the training sampler (under DDP: this rank's share)."""
        return episode_loader(self.train_split, sampler=self.sampler, batch_numbers=numbers,
                              num_workers=self.cfg.train.num_workers, pin_memory=pin_memory)

    def train_augment(self, seed: int, device: torch.device):
        """Augmentation + normalisation with a generator on ``device`` seeded by ``seed``."""
        if not self.cfg.train.augment:
            return self.normalize
        kwargs = dict(self.cfg.train.augment_kwargs)
        kwargs.setdefault("padding", max(1, round(8 * self.cfg.data.image_size / 84)))
        try:
            return EpisodeAugment(self.mean, self.std,
                                  generator=torch.Generator(device).manual_seed(seed), **kwargs)
        except TypeError as e:
            raise ConfigError(f"train.augment_kwargs: {e}") from None

    def val_batches(self, path: Path):
        """The fixed validation episodes, drawn once and saved at ``path``."""
        protocol = EpisodeProtocol.from_val_config(self.cfg.val)
        fixed, _ = fixed_episodes(self.val_split, protocol, protocol.shots[0], path)
        return protocol_batches(self.val_split, fixed, protocol.tasks_per_batch)
