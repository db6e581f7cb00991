"""Bad values in a training config are one ConfigError naming the key, found before any
data is prepared or any step is taken (heads and encoders are built dry)."""

import json
import math

import pytest
import torch

from fewshot_sparse.cli import main
from fewshot_sparse.config import config_from_dict
from fewshot_sparse.engine.train import train
from fewshot_sparse.errors import ConfigError


def base(tmp_path, root=None):
    return {"data": {"root": str(root or tmp_path / "never_made"), "image_size": 16},
            "encoder": {"name": "conv4", "kwargs": {"in_channels": 1, "hidden": 4}},
            "head": {"name": "group_lasso_svm", "kwargs": {}},
            "train": {"epochs": 1, "episodes_per_epoch": 2, "tasks_per_batch": 2,
                      "n_way": 3, "n_shot": 1, "n_query": 1, "lr_milestones": [],
                      "lr_factors": [], "device": "cpu"},
            "val": {"n_way": 3, "n_shot": 1, "n_query": 1, "episodes": 2},
            "out_dir": str(tmp_path / "run")}


@pytest.mark.parametrize("override, message", [
    ("head.kwargs.lambda1=-1", "head.kwargs.lambda1: must be >= 0, got -1"),
    ("head.kwargs.lambda2=0", "head.kwargs.lambda2: must be > 0, got 0"),
    ("head.kwargs.max_iter=-5", "head.kwargs.max_iter: must be >= 1, got -5"),
    ("head.kwargs.max_iter=0", "head.kwargs.max_iter: must be >= 1, got 0"),
    ("head.kwargs.max_iter=2.5", "head.kwargs.max_iter: expected an integer, got 2.5"),
    ("head.kwargs.tol=x", "head.kwargs.tol: expected a number, got 'x'"),
    ("head.kwargs.tol=NaN", "head.kwargs.tol: must be finite, got nan"),
    ("head.kwargs.lamda1=1", "head.kwargs.lamda1: no such option"),
    ("encoder.kwargs.in_channels=2.5", "encoder.kwargs.in_channels: expected an integer"),
    ("encoder.kwargs.hidden=-3", "encoder.kwargs"),
])
def test_head_and_encoder_values_before_any_data(tmp_path, override, message):
    cfg = config_from_dict(base(tmp_path), [override])
    with pytest.raises(ConfigError, match="^" + message.replace(".", r"\.").replace("(", r"\(")):
        train(cfg, progress=False)
    assert not (tmp_path / "never_made").exists()  # nothing was prepared
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("override, message", [
    ("train.lr=-1", "train.lr: must be > 0, got -1"),
    ("train.lr=0", "train.lr: must be > 0"),
    ("train.lr=NaN", "train.lr: must be finite, got nan"),
    ("train.lr=Infinity", "train.lr: must be finite, got inf"),
    ("train.weight_decay=-1", "train.weight_decay: must be >= 0"),
    ("train.episodes_per_epoch=1", r"train.episodes_per_epoch \(1\) must be >= "
                                   r"train.tasks_per_batch \(2\)"),
    ("train.device=tpu", "train.device: expected auto, cpu, cuda or cuda:K, got 'tpu'"),
])
def test_training_values(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(base(tmp_path), [override])


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda(tmp_path, capsys):
    (tmp_path / "c.json").write_text(json.dumps(base(tmp_path)))
    assert main(["train", "--config", str(tmp_path / "c.json"), "--set",
                 "train.device=cuda"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "CUDA is not available" in err[0]


def test_cli_bad_value_and_non_utf8_config(tmp_path, capsys):
    (tmp_path / "c.json").write_text(json.dumps(base(tmp_path)))
    assert main(["train", "--config", str(tmp_path / "c.json"), "--set",
                 "head.kwargs.lambda1=-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["fewshot-sparse: error: head.kwargs.lambda1: must be >= 0, got -1"]
    (tmp_path / "latin1.json").write_bytes('{"name": "caf\u00e9"}'.encode("latin-1"))
    assert main(["train", "--config", str(tmp_path / "latin1.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "latin1.json: not UTF-8" in err[0]
    assert not (tmp_path / "never_made").exists()


def test_encoder_channels_differ_from_the_data(tmp_path, tiny_cache):
    cfg = config_from_dict(base(tmp_path, tiny_cache), ["encoder.kwargs.in_channels=3"])
    with pytest.raises(ConfigError, match="in_channels is 3 but .* holds 1-channel images"):
        train(cfg, progress=False)
    assert not (tmp_path / "run" / "last.pt").exists()


def test_values_stay_accepted(tmp_path):
    cfg = config_from_dict(base(tmp_path), ["head.kwargs.max_iter=5", "head.kwargs.tol=0",
                                            "head.kwargs.lambda1=0", "train.lr=1e-3"])
    assert cfg.head.kwargs["max_iter"] == 5 and math.isclose(cfg.train.lr, 1e-3)
