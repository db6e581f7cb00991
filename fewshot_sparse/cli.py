"""``fewshot-sparse``: the command line. Each subcommand is a thin call into the library.

    fewshot-sparse prepare --dataset glyphs --out runs/data/glyphs
    fewshot-sparse train --config demo_glyphs [--set train.epochs=3 ...] [--resume]
    fewshot-sparse eval --checkpoint RUN/last.pt [--shot 1,5 --episodes 1000 --head protonet]
    fewshot-sparse inspect --checkpoint RUN/last.pt [--episodes 200]
    fewshot-sparse identifiability [--world shapes] [--config FILE|PRESET] [--set key=value ...]
    fewshot-sparse demo [--out runs/demo]
    fewshot-sparse features / sweep / predict   (cli_jobs.py: the research workflows)

User errors (a missing file, an unknown config key, a folder that is not a prepared
dataset, ...) print ``fewshot-sparse: error: <one line>`` and exit with status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from fewshot_sparse import __version__
from fewshot_sparse.cli_jobs import add_job_parsers
from fewshot_sparse.cli_parsing import UserError, int_list, name_list, parse_assignments
from fewshot_sparse.errors import FewshotSparseError

PROG = "fewshot-sparse"
HUGE_PAGES = "THP_MEM_ALLOC_ENABLE"  # torch: allocations >= 2 MB madvised to huge pages
DATASETS = ("miniimagenet", "tieredimagenet", "folder", "glyphs")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Few-shot meta-learning with sparse linear base learners "
                    "(group-Lasso Crammer-Singer SVM head).",
        epilog="Start with `fewshot-sparse demo`. `fewshot-sparse COMMAND --help` "
               "describes each command.")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    # prepare
    s = sub.add_parser("prepare", help="convert a dataset into the prepared cache format",
                       description="Convert a dataset (or render the built-in glyphs) into "
                                   "the prepared cache that train/eval/inspect read.")
    s.add_argument("--dataset", required=True, choices=DATASETS)
    s.add_argument("--root", default=None,
                   help="the dataset as downloaded (not needed for glyphs)")
    s.add_argument("--out", required=True, help="folder to write the prepared cache to")
    s.add_argument("--format", dest="fmt", default=None,
                   help="on-disk format of --root when it cannot be detected")
    s.add_argument("--image-size", type=int, default=None, help="resize images to this side")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--splits", type=name_list, default=None,
                   help="prepare only these splits, e.g. --splits test (default: every "
                        "split the dataset has; a folder tree may hold any of "
                        "train/, val/, test/)")
    s.add_argument("--glyph-instances", type=int, default=None,
                   help="glyphs only: instances per class (default 20)")
    s.add_argument("--glyph-max-classes", type=int, default=None,
                   help="glyphs only: at most this many classes per split (a small set)")
    s.set_defaults(func=cmd_prepare)

    # train
    s = sub.add_parser("train", help="meta-train a model from a config",
                       description="Meta-train an encoder + head from a JSON config or a "
                                   "shipped recipe name (e.g. demo_glyphs).")
    s.add_argument("--config", required=True, help="a JSON file or a recipe name")
    s.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=3 (repeatable)")
    s.add_argument("--resume", action="store_true",
                   help="continue from the run directory's last checkpoint")
    s.set_defaults(func=cmd_train)

    # eval
    s = sub.add_parser("eval", help="N-way K-shot accuracy (mean, 95%% CI) on test episodes",
                       description="Evaluate a checkpoint on fixed, seeded test episodes: "
                                   "accuracy with 95% CI, features used per task, solver "
                                   "statistics. Prints a table and writes a JSON file.")
    _add_eval_args(s, episodes=1000, shot="1,5")
    s.add_argument("--head", default=None,
                   help="evaluate with another head on the same encoder (e.g. protonet)")
    s.add_argument("--head-set", action="append", default=[], metavar="KEY=VALUE",
                   help="a head option, e.g. --head-set lambda1=0.5 (repeatable)")
    s.add_argument("--tasks-per-batch", type=int, default=8)
    s.add_argument("--overwrite", action="store_true",
                   help="replace a JSON file of an evaluation with other settings")
    s.set_defaults(func=cmd_eval)

    # inspect
    s = sub.add_parser("inspect", help="per-task feature usage: figures, tables, summary",
                       description="Which features does each task use? Runs the checkpoint "
                                   "on test episodes and writes figures (PNG), raw data "
                                   "(.npz, CSV) and a summary.")
    _add_eval_args(s, episodes=500, shot="5")
    s.add_argument("--head", default=None, help="inspect with another head")
    s.add_argument("--head-set", action="append", default=[], metavar="KEY=VALUE")
    s.add_argument("--overwrite", action="store_true",
                   help="replace a report of other settings in the output folder")
    s.set_defaults(func=cmd_inspect)

    # identifiability
    s = sub.add_parser("identifiability",
                       help="does the sparse head recover known factors (vectors or images)?",
                       description="Run the identifiability benchmark on tasks with known "
                                   "factors: synthetic vectors or rendered shapes.")
    s.add_argument("--config", default=None,
                   help="a preset (default, reduced, shapes, shapes_reduced) or a JSON file")
    s.add_argument("--world", default=None, choices=["synthetic", "shapes"],
                   help="the world; without --config it picks that world's preset")
    s.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    s.add_argument("--out", default="runs/identifiability", help="output folder")
    s.add_argument("--quiet", action="store_true", help="no per-run progress lines")
    s.set_defaults(func=cmd_identifiability)

    add_job_parsers(sub, _add_eval_args)

    # demo
    s = sub.add_parser("demo", help="glyphs -> train -> eval (2 heads) -> inspect, end to end",
                       description="The main job, on the built-in glyph dataset: prepare "
                                   "the glyphs (once), meta-train Conv-4 + group-Lasso SVM "
                                   "(a few minutes on a CPU), evaluate 5-way 1-shot and "
                                   "5-shot with the group-Lasso head and a ProtoNet head "
                                   "on the same encoder, then inspect feature usage.")
    s.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    s.add_argument("--data", default=None,
                   help="prepared glyph cache (default <out>/data/glyphs; made if missing)")
    s.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a demo_glyphs config value (repeatable)")
    s.add_argument("--episodes", type=int, default=1000,
                   help="test episodes per shot (default 1000, the standard protocol)")
    s.add_argument("--inspect-episodes", type=int, default=300)
    s.add_argument("--resume", action="store_true")
    s.add_argument("--device", default="auto")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.set_defaults(func=cmd_demo)
    return p


def _add_eval_args(s, *, episodes: int, shot: str) -> None:
    s.add_argument("--checkpoint", required=True, help="a checkpoint file or run directory")
    s.add_argument("--data", default=None,
                   help="prepared dataset folder (default: the one the model was trained on)")
    s.add_argument("--split", default="test")
    s.add_argument("--way", type=int, default=5)
    s.add_argument("--shot", type=int_list, default=int_list(shot),
                   help=f"comma-separated shot counts (default {shot})")
    s.add_argument("--query", type=int, default=15, help="query images per class")
    s.add_argument("--episodes", type=int, default=episodes)
    s.add_argument("--seed", type=int, default=None, help="seed of the test episodes")
    s.add_argument("--out", default=None, help="output folder (default: <run>/eval or "
                                               "<run>/inspect)")
    s.add_argument("--device", default="auto")
    s.add_argument("--quiet", action="store_true", help="no progress bars")


# -------------------------------------------------------------------------- commands

def _api():
    """``fewshot_sparse.api``, imported when a command runs: it loads torch (a second or
    more), which ``--help``, ``--version`` and argument errors should not wait for."""
    from fewshot_sparse import api

    return api


def cmd_prepare(a) -> int:
    if a.dataset != "glyphs" and a.root is None:
        raise UserError(f"prepare --dataset {a.dataset} needs --root (the downloaded dataset)")
    extra = {}
    if a.glyph_instances is not None:
        extra["glyph_instances"] = a.glyph_instances
    if a.glyph_max_classes is not None:
        extra["glyph_max_classes"] = a.glyph_max_classes
    if extra and a.dataset != "glyphs":
        raise UserError("--glyph-instances / --glyph-max-classes apply to --dataset glyphs only")
    api = _api()
    out = api.prepare(a.dataset, a.root, a.out, fmt=a.fmt, seed=a.seed,
                      image_size=a.image_size, progress=True, splits=a.splits, **extra)
    print(f"prepared {a.dataset} -> {out}\nsplits: {api.prepared_summary(out)}")
    return 0


def cmd_train(a) -> int:
    api = _api()
    cfg = api.load_config(a.config, a.overrides)
    run_dir = api.train(cfg, resume=a.resume, progress=True)
    print(f"run written to {run_dir}")
    return 0


def _seed_kw(a) -> dict:
    return {} if a.seed is None else {"seed": a.seed}


def cmd_eval(a) -> int:
    _api().evaluate(a.checkpoint, data=a.data, way=a.way, shots=a.shot, query=a.query,
                    episodes=a.episodes, head=a.head, head_kwargs=parse_assignments(a.head_set),
                    tasks_per_batch=a.tasks_per_batch, split=a.split, device=a.device,
                    out_dir=a.out, progress=not a.quiet, overwrite=a.overwrite,
                    **_seed_kw(a))
    return 0


def cmd_inspect(a) -> int:
    for shot in a.shot:
        out = a.out
        if out is not None and len(a.shot) > 1:  # one folder per shot: none overwrites another
            out = os.path.join(out, f"{shot}shot")
        rep = _api().feature_usage(
            a.checkpoint, data=a.data, episodes=a.episodes, way=a.way, shot=shot,
            query=a.query, out_dir=out, head=a.head,
            head_kwargs=parse_assignments(a.head_set), split=a.split, device=a.device,
            progress=not a.quiet, overwrite=a.overwrite, **_seed_kw(a))
        print(rep.summary)
        print(f"written to {rep.out_dir}")
    return 0


def cmd_identifiability(a) -> int:
    result = _api().run_identifiability(a.config, a.overrides, a.out, progress=not a.quiet,
                                        world=a.world)
    files = (result or {}).get("files") or {}
    if files:
        print("written: " + ", ".join(str(p) for p in files.values()))
    return 0


def cmd_demo(a) -> int:
    _api().run_demo(out=a.out, data=a.data, overrides=a.overrides, episodes=a.episodes,
                    inspect_episodes=a.inspect_episodes, resume=a.resume, device=a.device,
                    progress=not a.quiet)
    return 0


# ------------------------------------------------------------------------------ main

def _one_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    if isinstance(e, FileNotFoundError) and e.filename:
        text = f"no such file or directory: {e.filename}"
    elif isinstance(e, OSError) and e.strerror:  # full disk, read-only folder, ...
        text = e.strerror.lower() + (f": {e.filename}" if e.filename else "")
    return " ".join(text.split())


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``fewshot-sparse``; returns the exit status (0 ok, 2 user error,
    130 interrupted)."""
    # Tensors of 2 MB and more on transparent huge pages: on the CPU a run otherwise spends
    # much of its time in page faults on fresh activations (the demo: 6.1 -> 4.3 min,
    # docs/usage.md, "CPU speed"). torch reads this once, at its first allocation, hence
    # before the api loads it; a value the user exported wins.
    os.environ.setdefault(HUGE_PAGES, "1")
    parser = build_parser()
    args = parser.parse_args(argv)  # argparse itself exits 2 on bad usage
    try:
        return int(args.func(args) or 0)
    except (FewshotSparseError, OSError) as e:
        print(f"{PROG}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


def _entry() -> None:  # pragma: no cover
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
