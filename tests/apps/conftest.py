"""A tiny trained run on the built-in glyphs (16x16 grey) shared by the apps tests."""

import pytest

from fewshot_sparse.config import config_from_dict
from fewshot_sparse.engine.train import train


@pytest.fixture(scope="session")
def glyph_run(tmp_path_factory, glyphs16):
    """``(run_dir, glyph cache)``: Conv-4 (8 channels: 8 features at 16x16) + group-Lasso
    SVM head, trained for 2 steps on the session's tiny glyph set."""
    root = tmp_path_factory.mktemp("apps")
    cache = glyphs16
    cfg = config_from_dict({
        "data": {"root": str(cache), "dataset": "glyphs", "image_size": 16},
        "encoder": {"name": "conv4", "kwargs": {"in_channels": 1, "hidden": 8}},
        "head": {"name": "group_lasso_svm",
                 "kwargs": {"lambda1": 0.05, "smoothing": 1.0, "tol": 1e-3, "max_iter": 300}},
        "train": {"epochs": 1, "episodes_per_epoch": 4, "tasks_per_batch": 2, "n_way": 3,
                  "n_shot": 2, "n_query": 2, "lr": 0.05, "lr_milestones": [],
                  "lr_factors": [], "device": "cpu", "log_every": 1},
        "val": {"n_way": 3, "n_shot": 1, "n_query": 2, "episodes": 2, "tasks_per_batch": 2},
        "out_dir": str(root / "run"),
    })
    return train(cfg, progress=False), cache
