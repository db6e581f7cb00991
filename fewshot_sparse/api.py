"""The Python API: the same jobs as the command line, as functions.

    from fewshot_sparse.api import load_config, prepare, train, evaluate, feature_usage

    prepare("glyphs", None, "runs/data/glyphs")
    run_dir = train(load_config("demo_glyphs", ["train.epochs=2"]))
    report = evaluate(run_dir / "best.pt", shots=(1, 5), episodes=1000)
    print(report.result(5).accuracy, report.result(5).ci95)
    evaluate(run_dir / "best.pt", head="protonet")          # same encoder, another head
    usage = feature_usage(run_dir / "best.pt", episodes=300, shot=5)
    print(usage.summary)                                     # figures under usage.out_dir

``run_demo`` is what ``fewshot-sparse demo`` runs. The work is done below this module
(apps/, engine/, data/); this is their public face, and the command line calls only it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from fewshot_sparse.apps.demo import run_demo
from fewshot_sparse.apps.evaluate import evaluate
from fewshot_sparse.apps.features import FeatureCache, extract_features
from fewshot_sparse.apps.predict import Prediction, predict
from fewshot_sparse.apps.sweep import SweepReport, sweep
from fewshot_sparse.apps.tasks import evaluate_tasks, train_on_tasks
from fewshot_sparse.apps.inspect import FeatureUsageReport, feature_usage
from fewshot_sparse.config import Config, load_config
from fewshot_sparse.data import prepare as _prepare
from fewshot_sparse.data import read_manifest
from fewshot_sparse.data.learn2learn import episode_from_task, episodes_from_tasks
from fewshot_sparse.engine.report import EvalReport
from fewshot_sparse.engine.train import train as _train
from fewshot_sparse.identifiability.benchmark import run_identifiability


def train(config, *, resume: bool = False, progress: bool = True) -> Path:
    """Meta-train the model ``config`` describes (a Config, a JSON path or a recipe name);
    returns the run directory (checkpoints ``last.pt`` / ``best.pt``, ``tb/``)."""
    if not isinstance(config, Config):
        config = load_config(config)
    return Path(_train(config, resume=resume, progress=progress))


def prepare(dataset: str, root, out, *, fmt: Optional[str] = None, seed: int = 0,
            image_size: Optional[int] = None, progress: bool = True, **options) -> Path:
    """Convert a dataset (or render the built-in glyphs, ``root=None``) into the prepared
    cache that training and evaluation read; returns the cache folder. ``options``:
    ``splits`` (only these, e.g. ``["test"]``; default: every split the dataset has),
    the glyph set's ``glyph_instances`` / ``glyph_max_classes``."""
    return Path(_prepare(dataset, root, out, fmt=fmt, seed=seed, image_size=image_size,
                         progress=progress, **options))


def prepared_summary(path) -> str:
    """The splits of a prepared cache in one line: name (classes, images, HxWxC), ..."""
    splits = read_manifest(path)["splits"]
    return ", ".join(f"{name} ({info['n_classes']} classes, {info['n_images']} images, "
                     f"{'x'.join(str(v) for v in info['image_shape'])})"
                     for name, info in splits.items())


__all__ = ["Config", "EvalReport", "FeatureCache", "FeatureUsageReport", "Prediction",
           "SweepReport", "episode_from_task", "episodes_from_tasks", "evaluate",
           "evaluate_tasks", "extract_features", "feature_usage", "load_config",
           "predict", "prepare", "prepared_summary", "run_demo", "run_identifiability",
           "sweep", "train", "train_on_tasks"]
