"""A checkpoint can never run code: a pickle payload hidden inside an otherwise valid
checkpoint is refused (one line naming the file) and never executes, through eval,
inspect, ``train --resume`` and the CLI. Truncated files and NaN weights are refused too."""

import os

import pytest
import torch

from fewshot_sparse.cli import main
from fewshot_sparse.engine.checkpoint import read_checkpoint, save_checkpoint
from fewshot_sparse.engine.train import train
from fewshot_sparse.errors import CheckpointError


class Payload:
    """Unpickling this creates ``marker`` (what a hostile file would do, harmlessly)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def plant(ckpt, marker, key="notes"):
    state = torch.load(ckpt, weights_only=True)
    state[key] = Payload(marker)
    torch.save(state, ckpt)


@pytest.fixture
def trained_run(tiny_config):
    cfg = tiny_config("trained", head="protonet", epochs=1, batches_per_epoch=1)
    train(cfg, progress=False)
    return cfg


def copy_run(cfg, dest):
    import shutil

    shutil.copytree(cfg.out_dir, dest)
    return dest


def test_payload_refused_by_read_and_eval(trained_run, tmp_path, capsys):
    from fewshot_sparse.api import evaluate

    run = copy_run(trained_run, tmp_path / "run")
    marker = tmp_path / "PWNED"
    plant(run / "last.pt", marker)
    plant(run / "best.pt", marker)
    with pytest.raises(CheckpointError, match="last.pt: refused"):
        read_checkpoint(run / "last.pt")
    with pytest.raises(CheckpointError, match="refused"):
        evaluate(run / "last.pt", shots=[1], episodes=2, way=3, query=2, progress=False)
    assert main(["eval", "--checkpoint", str(run / "last.pt"), "--shot", "1",
                 "--episodes", "2", "--way", "3", "--query", "2", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "last.pt: refused" in err[0] and "Traceback" not in err[0]
    assert main(["inspect", "--checkpoint", str(run), "--shot", "1", "--episodes", "2",
                 "--way", "3", "--query", "2", "--quiet", "--out", str(tmp_path / "i")]) == 2
    assert not marker.exists()


def test_payload_refused_by_resume(trained_run, tmp_path):
    from fewshot_sparse.config import config_from_dict

    run = copy_run(trained_run, tmp_path / "run")
    marker = tmp_path / "PWNED"
    plant(run / "last.pt", marker, key="config")  # even in place of the config
    cfg = config_from_dict({**trained_run.to_dict(), "out_dir": str(run),
                            "train": {**trained_run.to_dict()["train"], "epochs": 2}})
    with pytest.raises(CheckpointError, match="refused"):
        train(cfg, resume=True, progress=False)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="refused"):
        train(cfg, resume=True, progress=False)


def test_save_refuses_non_plain_objects(tmp_path):
    m = torch.nn.Linear(2, 2)
    with pytest.raises(TypeError, match="not a tensor or plain value"):
        save_checkpoint(tmp_path / "a.pt", model=m, epoch=0, global_step=0, config={},
                        encoder="conv4", extra={"obj": Payload(tmp_path / "x")})
    with pytest.raises(TypeError, match="config"):
        save_checkpoint(tmp_path / "a.pt", model=m, epoch=0, global_step=0,
                        config={"p": object()}, encoder="conv4")
    assert not (tmp_path / "a.pt").exists()


def test_truncated_and_nan_checkpoints(trained_run, tmp_path, capsys):
    run = copy_run(trained_run, tmp_path / "run")
    data = (run / "last.pt").read_bytes()
    (run / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pt: not a readable checkpoint"):
        read_checkpoint(run / "cut.pt")
    state = torch.load(run / "last.pt", weights_only=True)
    first = next(k for k, v in state["model"].items() if v.is_floating_point())
    state["model"][first].view(-1)[0] = float("nan")
    torch.save(state, run / "nan.pt")
    with pytest.raises(CheckpointError, match=f"nan.pt: model weights '{first}' hold NaN"):
        read_checkpoint(run / "nan.pt")
    assert main(["eval", "--checkpoint", str(run / "cut.pt"), "--shot", "1", "--episodes",
                 "2", "--way", "3", "--query", "2", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cut.pt" in err[0]


def test_project_checkpoints_are_plain(trained_run):
    state = torch.load(os.path.join(trained_run.out_dir, "last.pt"), weights_only=True)
    assert isinstance(state["config"], dict) and isinstance(state["rng"]["torch"], torch.Tensor)


def test_bad_saved_config_and_bad_head_settings(trained_run, tmp_path, capsys):
    from fewshot_sparse.api import evaluate
    from fewshot_sparse.errors import ConfigError

    run = copy_run(trained_run, tmp_path / "run")
    state = torch.load(run / "last.pt", weights_only=True)
    state["config"]["head"] = {"name": "group_lasso_svm", "kwargs": {"lambda1": -3}}
    torch.save(state, run / "badcfg.pt")
    assert main(["eval", "--checkpoint", str(run / "badcfg.pt"), "--shot", "1",
                 "--episodes", "2", "--way", "3", "--query", "2", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "badcfg.pt" in err[0] and "lambda1: must be >= 0" in err[0]
    kw = dict(shots=[1], episodes=2, way=3, query=2, progress=False, print_table=False,
              head="group_lasso_svm")
    for bad, message in (({"tol": float("nan")}, "tol: must be finite"),
                         ({"max_iter": 0}, "max_iter: must be >= 1"),
                         ({"max_iter": 2.5}, "max_iter: expected an integer")):
        with pytest.raises(ConfigError, match=message):
            evaluate(run / "last.pt", head_kwargs=bad, **kw)
