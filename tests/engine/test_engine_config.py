"""Configs: recipes, overrides, and errors that name the key."""

import json

import pytest

from fewshot_sparse.config import Config, config_from_dict, list_recipes, load_config
from fewshot_sparse.errors import ConfigError
from fewshot_sparse.model import build_model

RECIPES = ["demo_glyphs", "group_lasso_svm_miniimagenet", "group_lasso_svm_tieredimagenet",
           "metaoptnet_svm_miniimagenet", "metaoptnet_svm_tieredimagenet",
           "protonet_miniimagenet", "ridge_miniimagenet"]


def test_all_recipes_ship_and_build():
    assert list_recipes() == RECIPES
    for name in RECIPES:
        cfg = load_config(name)
        assert cfg.name == name
        build_model(cfg)  # encoder and head kwargs are valid


@pytest.mark.parametrize("name,shot", [("metaoptnet_svm_miniimagenet", 15),
                                       ("metaoptnet_svm_tieredimagenet", 10)])
def test_metaoptnet_recipe(name, shot):
    t = load_config(name).train
    assert (t.epochs, t.episodes_per_epoch, t.tasks_per_batch) == (60, 8000, 8)
    assert (t.n_way, t.n_shot, t.n_query) == (5, shot, 6)
    assert (t.lr, t.momentum, t.nesterov, t.weight_decay) == (0.1, 0.9, True, 5e-4)
    assert t.lr_milestones == [20, 40, 50] and t.lr_factors == [0.06, 0.012, 0.0024]
    assert t.label_smoothing == 0.1


def test_bare_name_path_and_overrides(tmp_path):
    cfg = load_config("demo_glyphs", ["train.epochs=1", "head.kwargs.lambda1=0.3",
                                      "train.lr_milestones=[5]", "train.lr_factors=[0.1]",
                                      "out_dir=runs/x", "train.device=cpu"])
    assert cfg.train.epochs == 1 and cfg.head.kwargs["lambda1"] == 0.3
    assert cfg.out_dir == "runs/x" and cfg.train.device == "cpu"
    path = tmp_path / "c.json"
    cfg.save(path)
    assert load_config(str(path)) == cfg
    assert load_config(path, ["train.lr=1"]).train.lr == 1.0  # int accepted as float


def test_partial_file_keeps_defaults(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"train": {"epochs": 3}}))
    cfg = load_config(path)
    assert cfg.train.epochs == 3 and cfg.train.lr == Config().train.lr


@pytest.mark.parametrize("data,overrides,message", [
    ({"train": {"epohcs": 3}}, [], "unknown config key 'train.epohcs'"),
    ({"trian": {}}, [], "unknown config key 'trian'"),
    ({}, ["val.shots=5"], "unknown config key 'val.shots'"),
    ({}, ["train.epochs=2.5"], "train.epochs: expected int"),
    ({}, ["train.epochs=ten"], "train.epochs: expected int, got 'ten'"),
    ({"train": {"nesterov": "yes"}}, [], "train.nesterov: expected bool"),
    ({"train": {"lr_factors": [0.1, "x", 0.2]}}, [], r"train.lr_factors\[1\]: expected float"),
    ({"encoder": {"kwargs": []}}, [], "encoder.kwargs: expected a JSON object"),
    ({"train": 3}, [], "train: expected a JSON object"),
    ({}, ["train.epochs"], "not of the form a.b=value"),
    ({}, ["train.lr_milestones=[1,2]"], "same length"),
    ({}, ["train.n_way=1"], "train.n_way must be >= 2"),
])
def test_errors_name_the_key(data, overrides, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(data, overrides)


def test_missing_file_or_recipe_and_bad_json(tmp_path):
    with pytest.raises(ConfigError, match="no config file 'nope'.*demo_glyphs"):
        load_config("nope")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(bad)
