"""Data pipeline figures: preparation throughput and episodes per second.

    python benchmarks/bench_data.py            # full: 38,400-image miniImageNet train cache
    python benchmarks/bench_data.py --quick    # smaller, a few seconds

Prints: preparation MB/s of a synthetic learn2learn-format miniImageNet cache; episodes/s
of 5-way 15-shot 6-query 84x84 episodes from a prepared synthetic cache without and with
augmentation (CPU); build time of the glyph set and its 5-way 5-shot 15-query episodes/s
(20 instances per class). Target: >= 100 episodes/s.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fewshot_sparse.data import DataWarning, EpisodeAugment, episode_loader, open_prepared, prepare  # noqa: E402


def write_l2l_cache(root: Path, n_train_classes: int, per_class: int, seed: int = 0) -> int:
    """A synthetic miniImageNet in the learn2learn pickle format; returns image bytes written."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    total = 0
    for split, n_classes in (("train", n_train_classes), ("validation", 16), ("test", 20)):
        n = n_classes * per_class if split == "train" else n_classes * min(per_class, 30)
        images = rng.integers(0, 256, size=(n, 84, 84, 3), dtype=np.uint8)
        labels = np.arange(n) % n_classes
        class_dict = {f"{split}_n{c:05d}": np.nonzero(labels == c)[0].tolist() for c in range(n_classes)}
        with open(root / f"mini-imagenet-cache-{split}.pkl", "wb") as f:
            pickle.dump({"image_data": images, "class_dict": class_dict}, f, protocol=4)
        total += images.nbytes
    return total


def episodes_per_second(split, *, augment=None, n_batches=20, tasks=4, n_way=5, n_shot=15, n_query=6,
                        num_workers=0) -> float:
    loader = episode_loader(split, n_way=n_way, n_shot=n_shot, n_query=n_query, tasks_per_batch=tasks,
                            n_batches=n_batches, seed=0, num_workers=num_workers)
    g = torch.Generator().manual_seed(0)
    next(iter(episode_loader(split, n_way=n_way, n_shot=n_shot, n_query=n_query, n_batches=1)))  # warm-up
    t, c = time.perf_counter(), time.process_time()
    for batch in loader:
        if augment is not None:
            batch = augment(batch, generator=g)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    n = n_batches * tasks
    return f"{n / wall:.0f} episodes/s ({n / cpu:.0f} per CPU-second)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller caches and fewer batches")
    ap.add_argument("--workers", type=int, default=0, help="DataLoader workers for the episode figures")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    per_class = 60 if args.quick else 600
    n_batches = 10 if args.quick else 50
    rows = []
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        tmp = Path(tmp)
        nbytes = write_l2l_cache(tmp / "mini", 64, per_class)
        t, c = time.perf_counter(), time.process_time()
        prepare("miniimagenet", tmp / "mini", tmp / "cache", progress=False)
        dt, dc = time.perf_counter() - t, time.process_time() - c
        n_img = nbytes // (84 * 84 * 3)
        rows.append(("prepare miniImageNet (learn2learn pkl)", f"{n_img} images, {nbytes / 1e6:.0f} MB",
                     f"{nbytes / 1e6 / dt:.0f} MB/s ({dt:.1f} s wall, {dc:.1f} s CPU)"))
        train = open_prepared(tmp / "cache")["train"]
        aug = EpisodeAugment(train.mean, train.std)
        kw = dict(n_batches=n_batches, num_workers=args.workers)
        rows.append(("episodes 5w15s6q 84x84, no augmentation", f"{len(train)} images, memmap",
                     episodes_per_second(train, **kw)))
        rows.append(("episodes 5w15s6q 84x84, augmentation (CPU)", "crop+jitter+flip+normalize",
                     episodes_per_second(train, augment=aug, **kw)))

        t, c = time.perf_counter(), time.process_time()
        gkw = dict(glyph_max_classes=40, glyph_instances=20) if args.quick else {}
        prepare("glyphs", None, tmp / "glyphs", progress=False, **gkw)
        dt, dc = time.perf_counter() - t, time.process_time() - c
        g = open_prepared(tmp / "glyphs")
        n_cls = sum(s.n_classes for s in g.values())
        n_img = sum(len(s) for s in g.values())
        rows.append(("build glyph set" + (" (40 classes/split)" if args.quick else " (default)"),
                     f"{n_cls} classes, {n_img} images 32x32", f"{dt:.1f} s wall, {dc:.1f} s CPU"))
        rows.append(("episodes 5w5s15q glyphs 32x32", f"{len(g['train'])} images",
                     episodes_per_second(g['train'], n_shot=5, n_query=15, **kw)))
    width = max(len(r[0]) for r in rows)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, workers={args.workers}, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    for name, what, figure in rows:
        print(f"{name:<{width}}  {what:<34}  {figure}")


if __name__ == "__main__":
    main()
