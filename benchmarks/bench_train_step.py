"""Time one meta-training step, split into data / encoder / head / optimizer.

    python benchmarks/bench_train_step.py                 # ResNet-12, 8 x 5-way 15-shot 6-query, 84x84
    python benchmarks/bench_train_step.py --quick         # a CPU-sized version of the same
    python benchmarks/bench_train_step.py --demo          # the demo_glyphs recipe: episodes/s

The step is the one ``engine/step.py`` takes, cut at the encoder/head boundary so each
part is timed alone: encoder forward and backward, head forward (the solver) and
backward (implicit gradient), SGD update; "data" is gathering the episodes from a
prepared split (random uint8 images, in memory) plus the device augmentation. CUDA
times are taken between synchronisations. Prints the mean and min over repeats.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from fewshot_sparse.config import load_config
from fewshot_sparse.data import EpisodeAugment, EpisodeSampler, PreparedSplit
from fewshot_sparse.data.loader import collate_episodes
from fewshot_sparse.encoders import build_encoder
from fewshot_sparse.engine.device import resolve_device
from fewshot_sparse.engine.train import derived_seed, make_optimizer
from fewshot_sparse.errors import ConfigError
from fewshot_sparse.heads import build_head
from fewshot_sparse.model import EpisodicModel, build_model


def random_split(n_classes: int, per_class: int, size: int, channels: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n_classes * per_class, size, size, channels), dtype=np.uint8)
    return PreparedSplit.from_arrays(images, np.repeat(np.arange(n_classes), per_class))


class Timer:
    def __init__(self, device):
        self.cuda = device.type == "cuda"
        self.times: dict[str, list[float]] = {}

    def __call__(self, name):
        timer = self

        class _Ctx:
            def __enter__(self):
                if timer.cuda:
                    torch.cuda.synchronize()
                self.t0 = time.perf_counter()

            def __exit__(self, *exc):
                if timer.cuda:
                    torch.cuda.synchronize()
                timer.times.setdefault(name, []).append(time.perf_counter() - self.t0)

        return _Ctx()


def bench_step(args, device):
    size, channels = args.size, 3
    split = random_split(max(args.way, 16), args.shot + args.query + 4, size, channels)
    sampler = EpisodeSampler(split, n_way=args.way, n_shot=args.shot, n_query=args.query,
                             tasks_per_batch=args.tasks, n_batches=args.warmup + args.repeats)
    augment = EpisodeAugment(split.mean, split.std, padding=max(1, round(8 * size / 84)),
                             generator=torch.Generator(device).manual_seed(0))
    kwargs = {"avg_pool": args.avg_pool} if args.encoder == "resnet12_metaoptnet" else {}
    encoder = build_encoder(args.encoder, in_channels=channels, **kwargs)
    head_kwargs = {"lambda1": args.lambda1} if args.head == "group_lasso_svm" else {}
    model = EpisodicModel(encoder, build_head(args.head, **head_kwargs),
                          channels_last=args.channels_last).to(device)
    if args.channels_last and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True,
                          weight_decay=5e-4)
    timer = Timer(device)
    model.train()
    info = None
    for i in range(args.warmup + args.repeats):
        if i == args.warmup:
            timer.times.clear()
        with timer("data"):
            batch = collate_episodes(split, sampler.batch(i)).to(device, non_blocking=True)
            batch = augment(batch)
        with timer("encoder forward"):
            support, query = model.features(batch, amp=args.amp)
        s = support.detach().requires_grad_()
        q = query.detach().requires_grad_()
        with timer("head forward"):
            out = model.head(q, s, batch.support_labels, batch.n_way)
            loss = F.cross_entropy(out.logits.reshape(-1, out.logits.shape[-1]).float(),
                                   batch.query_labels.reshape(-1), label_smoothing=0.1)
        with timer("head backward"):
            opt.zero_grad(set_to_none=True)
            loss.backward()
        with timer("encoder backward"):
            torch.autograd.backward([support, query], [s.grad, q.grad])
        with timer("optimizer"):
            opt.step()
        info = out.info
    total = [sum(v) for v in zip(*timer.times.values())]
    print(f"device: {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else f'{torch.get_num_threads()} threads'})")
    print(f"encoder {args.encoder} ({sum(p.numel() for p in encoder.parameters()) / 1e6:.2f}M "
          f"parameters, {support.shape[-1]}-d features), head {args.head}, amp={args.amp}, "
          f"channels_last={args.channels_last}")
    print(f"{args.tasks} episodes x {args.way}-way {args.shot}-shot {args.query}-query, "
          f"{size}x{size}; {args.repeats} timed steps after {args.warmup} warm-up")
    if info is not None:
        print(f"solver: {info.summary()}, active fraction {float(out.active.float().mean()):.3f}")
    print(f"{'part':<18}{'mean ms':>10}{'min ms':>10}{'share':>8}")
    mean_total = statistics.mean(total)
    for name, v in timer.times.items():
        print(f"{name:<18}{1e3 * statistics.mean(v):>10.1f}{1e3 * min(v):>10.1f}"
              f"{statistics.mean(v) / mean_total:>8.1%}")
    print(f"{'step':<18}{1e3 * mean_total:>10.1f}{1e3 * min(total):>10.1f}"
          f"{'':>8}  -> {args.tasks / mean_total:.1f} episodes/s")


def bench_demo(args, device):
    """Episodes/s of the demo recipe's training steps (data and augmentation included)."""
    from fewshot_sparse.engine.step import meta_train_step

    cfg = load_config("demo_glyphs", ["train.device=" + str(device)])
    t = cfg.train
    split = random_split(64, 20, cfg.data.image_size, cfg.encoder.kwargs.get("in_channels", 3))
    torch.manual_seed(0)
    model = build_model(cfg).to(device)
    optimizer, _ = make_optimizer(model, cfg)
    sampler = EpisodeSampler(split, n_way=t.n_way, n_shot=t.n_shot, n_query=t.n_query,
                             tasks_per_batch=t.tasks_per_batch, n_batches=args.warmup + args.repeats)
    augment = EpisodeAugment(split.mean, split.std, padding=max(1, round(8 * cfg.data.image_size / 84)),
                             generator=torch.Generator(device).manual_seed(derived_seed(0, 0)),
                             **t.augment_kwargs)
    times = []
    for i in range(args.warmup + args.repeats):
        t0 = time.perf_counter()
        batch = collate_episodes(split, sampler.batch(i))
        stats = meta_train_step(model, batch, optimizer, label_smoothing=t.label_smoothing,
                                augment=augment, amp=t.amp)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    mean = statistics.mean(times)
    print(f"demo_glyphs on {device} ({torch.get_num_threads()} threads): "
          f"{1e3 * mean:.0f} ms/step (min {1e3 * min(times):.0f}), "
          f"{t.tasks_per_batch / mean:.1f} episodes/s; last step {stats}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoder", default="resnet12_metaoptnet")
    p.add_argument("--head", default="group_lasso_svm")
    p.add_argument("--lambda1", type=float, default=0.1)
    p.add_argument("--avg-pool", action="store_true")
    p.add_argument("--tasks", type=int, default=8)
    p.add_argument("--way", type=int, default=5)
    p.add_argument("--shot", type=int, default=15)
    p.add_argument("--query", type=int, default=6)
    p.add_argument("--size", type=int, default=84)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", action="store_true", help="bfloat16 encoder (CUDA only)")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--quick", action="store_true",
                   help="CPU-sized: 2 episodes x 5-way 1-shot 2-query at 84x84, 3 repeats")
    p.add_argument("--demo", action="store_true", help="episodes/s of the demo_glyphs recipe")
    args = p.parse_args(argv)
    try:
        device = resolve_device(args.device)
    except ConfigError as e:
        p.error(str(e))
    warnings.filterwarnings("ignore", message=".*tasks converged.*")
    if args.demo:
        return bench_demo(args, device)
    if args.quick:
        args.tasks, args.shot, args.query = 2, 1, 2
        args.repeats, args.warmup = min(args.repeats, 3), min(args.warmup, 1)
    bench_step(args, device)


if __name__ == "__main__":
    main()
