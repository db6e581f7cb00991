"""Fixtures for the training-engine tests: a tiny prepared glyph cache and tiny configs."""

import pytest

from fewshot_sparse.config import config_from_dict


@pytest.fixture(scope="session")
def tiny_cache(glyphs16):
    """The built-in glyph set, 12 classes x 12 images per split, 16x16 grayscale."""
    return glyphs16


def tiny_dict(root, out_dir, *, encoder="conv4", head="group_lasso_svm", epochs=2,
              batches_per_epoch=3, tasks_per_batch=2):
    encoders = {
        "conv4": {"name": "conv4", "kwargs": {"in_channels": 1, "hidden": 8}},
        # MetaOptNet's ResNet-12 at a toy width, dropout and DropBlock active at once.
        "resnet12": {"name": "resnet12_metaoptnet", "kwargs": {
            "in_channels": 1, "channels": [4, 4, 8, 8], "drop_rate": 0.1,
            "dropblock_size": 2, "dropblock_ramp": 1}},
    }
    heads = {"group_lasso_svm": {"name": "group_lasso_svm",
                                 "kwargs": {"lambda1": 0.05, "tol": 1e-3, "max_iter": 300}},
             "protonet": {"name": "protonet", "kwargs": {}}}
    return {
        "data": {"root": str(root), "dataset": "glyphs", "image_size": 16},
        "encoder": encoders[encoder],
        "head": heads[head],
        "train": {"epochs": epochs, "episodes_per_epoch": batches_per_epoch * tasks_per_batch,
                  "tasks_per_batch": tasks_per_batch, "n_way": 3, "n_shot": 2, "n_query": 2,
                  "lr": 0.05, "lr_milestones": [2], "lr_factors": [0.5], "log_every": 1,
                  "device": "cpu"},
        "val": {"n_way": 3, "n_shot": 1, "n_query": 2, "episodes": 4, "tasks_per_batch": 2},
        "out_dir": str(out_dir),
    }


@pytest.fixture
def tiny_config(tiny_cache, tmp_path):
    """``tiny_config(name="run", overrides=[...], **kw)``: a Config training in seconds."""

    def make(name="run", overrides=(), **kw):
        return config_from_dict(tiny_dict(tiny_cache, tmp_path / name, **kw), list(overrides))

    return make
