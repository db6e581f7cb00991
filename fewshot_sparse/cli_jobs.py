"""The research-workflow commands of ``fewshot-sparse`` (registered by cli.py):

    fewshot-sparse features --checkpoint RUN --out FEATS [--data D --shot 1,5 --episodes N]
    fewshot-sparse sweep --features FEATS (--lambda1-grid ... | --lambda-ratio-grid ...)
    fewshot-sparse predict --checkpoint RUN --support DIR --query FILES_OR_DIR [--head ...]
"""

from __future__ import annotations

from fewshot_sparse.cli_parsing import UserError, float_grid, int_list, name_list, parse_assignments


def _api():
    """``fewshot_sparse.api``, imported when a command runs: it loads torch (a second or
    more), which ``--help`` and argument errors should not wait for."""
    from fewshot_sparse import api

    return api


def add_job_parsers(sub, add_eval_args) -> None:
    # features
    s = sub.add_parser("features", help="encode the fixed test episodes once; keep the features",
                       description="Run the encoder once over the fixed evaluation episodes "
                                   "(the ones eval scores with this seed) and store their "
                                   "features (float16, memory-mapped) with the episode list "
                                   "and the data's manifest hash, for `sweep`.")
    add_eval_args(s, episodes=1000, shot="1,5")  # --out: the cache folder (required)
    s.add_argument("--dtype", default="float16", choices=("float16", "float32"))
    s.add_argument("--tasks-per-batch", type=int, default=8)
    s.set_defaults(func=cmd_features)

    # sweep
    s = sub.add_parser("sweep", help="accuracy vs features used along a lambda1 grid (cached "
                                     "features, no encoder)",
                       description="Fit the head along a grid of lambda1 (or of lambda1 / "
                                   "lambda_max per task) on a feature cache; write accuracy "
                                   "(mean, 95%% CI) and features used per grid point as CSV, "
                                   "JSON, PNG and TensorBoard scalars, with other heads as "
                                   "reference points on the same episodes.")
    s.add_argument("--features", required=True, help="a feature cache (`fewshot-sparse features`)")
    s.add_argument("--head", default="group_lasso_svm")
    grid = s.add_mutually_exclusive_group(required=True)
    grid.add_argument("--lambda1-grid", type=float_grid, default=None,
                      help="lambda1 values: 0.01,0.1,1 or geom:START:STOP:N")
    grid.add_argument("--lambda-ratio-grid", type=float_grid, default=None,
                      help="lambda1 / lambda_max of each task: 0.1,0.5 or geom:0.01:1:20")
    s.add_argument("--head-set", action="append", default=[], metavar="KEY=VALUE",
                   help="a head option, e.g. --head-set lambda2=0.5 (repeatable)")
    s.add_argument("--reference", type=name_list, default=["svm_cs", "ridge", "protonet"],
                   help="reference heads on the same episodes (default svm_cs,ridge,protonet; "
                        "'none' for none)")
    s.add_argument("--shot", type=int_list, default=None, help="shots to sweep (default: all)")
    s.add_argument("--tasks-per-batch", type=int, default=100)
    s.add_argument("--no-warm-start", action="store_true",
                   help="solve every grid point from the solver's own start (default: "
                        "from the previous point's solution on the same episodes)")
    s.add_argument("--out", default=None, help="output folder (default <features>/sweep)")
    s.add_argument("--device", default="auto")
    s.add_argument("--quiet", action="store_true", help="no per-point lines")
    s.set_defaults(func=cmd_sweep)

    # predict
    s = sub.add_parser("predict", help="classify your own images from a labelled support folder",
                       description="Fit the head on a support folder (one subfolder per class, "
                                   "any number of images each) and classify query images: "
                                   "predicted class, per-class scores, and the features the "
                                   "fitted head uses per class.")
    s.add_argument("--checkpoint", required=True, help="a checkpoint file or run directory")
    s.add_argument("--support", required=True, help="folder with one subfolder per class")
    s.add_argument("--query", required=True, nargs="+", help="query image files or folders")
    s.add_argument("--head", default=None, help="fit another head (e.g. protonet)")
    s.add_argument("--head-set", action="append", default=[], metavar="KEY=VALUE")
    s.add_argument("--out", default=None, help="write predictions.csv / .json here")
    s.add_argument("--device", default="auto")
    s.set_defaults(func=cmd_predict)


def cmd_features(a) -> int:
    if a.out is None:
        raise UserError("features needs --out (the feature cache folder to write)")
    kw = {} if a.seed is None else {"seed": a.seed}
    cache = _api().extract_features(
        a.checkpoint, a.out, data=a.data, split=a.split, way=a.way, shots=a.shot,
        query=a.query, episodes=a.episodes, tasks_per_batch=a.tasks_per_batch,
        dtype=a.dtype, device=a.device, progress=not a.quiet, **kw)
    meta = cache.meta
    for shot in cache.shots:
        m = meta["shots"][str(shot)]
        print(f"{meta['way']}-way {shot}-shot: {m['episodes']} episodes, "
              f"{meta['n_features']} features, encoder {m['encoder_seconds']:.1f}s")
    print(f"written: {cache.root}")
    return 0


def cmd_sweep(a) -> int:
    refs = [] if a.reference == ["none"] else a.reference
    _api().sweep(a.features, head=a.head, lambda1_grid=a.lambda1_grid,
                 lambda_ratio_grid=a.lambda_ratio_grid,
                 head_kwargs=parse_assignments(a.head_set), reference_heads=refs,
                 shots=a.shot, tasks_per_batch=a.tasks_per_batch, device=a.device,
                 out_dir=a.out, progress=not a.quiet, warm_start=not a.no_warm_start)
    return 0


def cmd_predict(a) -> int:
    _api().predict(a.checkpoint, a.support, a.query, head=a.head,
                   head_kwargs=parse_assignments(a.head_set), device=a.device, out=a.out)
    return 0
