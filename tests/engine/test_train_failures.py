"""Training on a full disk or into a read-only folder: one clear line, the previous
checkpoint intact, no temporary file left behind."""

import errno
import json
import os
import subprocess

import pytest
import torch

from fewshot_sparse.cli import main
from fewshot_sparse.engine.checkpoint import read_checkpoint, save_checkpoint
from fewshot_sparse.errors import OutputError


def run_config(root, out_dir, epochs=1):
    return {"data": {"root": str(root), "image_size": 16},
            "encoder": {"name": "conv4", "kwargs": {"in_channels": 1, "hidden": 4}},
            "head": {"name": "protonet", "kwargs": {}},
            "train": {"epochs": epochs, "episodes_per_epoch": 2, "tasks_per_batch": 2,
                      "n_way": 3, "n_shot": 1, "n_query": 1, "lr_milestones": [],
                      "lr_factors": [], "device": "cpu"},
            "val": {"n_way": 3, "n_shot": 1, "n_query": 1, "episodes": 2},
            "out_dir": str(out_dir)}


def no_temporaries(folder):
    return not [p for p in folder.iterdir() if p.name.startswith(".")]


def test_checkpoint_on_a_full_disk_keeps_the_previous_one(tmp_path, monkeypatch):
    model = torch.nn.Linear(3, 2)
    path = save_checkpoint(tmp_path / "last.pt", model=model, epoch=1, global_step=1,
                           config={}, encoder="conv4")

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OutputError, match="last.pt: no space left on device"):
        save_checkpoint(path, model=model, epoch=2, global_step=2, config={}, encoder="conv4")
    monkeypatch.undo()
    assert read_checkpoint(path)["epoch"] == 1 and no_temporaries(tmp_path)


def fill(folder):
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"x" * 65536)
    except OSError as e:
        assert e.errno == errno.ENOSPC
    finally:
        os.close(fd)


def test_checkpoint_on_a_real_full_disk(small_disk):
    disk = small_disk("1m")
    if disk is None:
        pytest.skip("mounting a tmpfs is not permitted here (the simulated test covers it)")
    small = torch.nn.Linear(3, 2)
    path = save_checkpoint(disk / "best.pt", model=small, epoch=1, global_step=1, config={},
                           encoder="conv4")
    big = torch.nn.Linear(1000, 1000)  # 4 MB of weights: more than the disk holds
    with pytest.raises(OutputError, match="best.pt: no space left on device"):
        save_checkpoint(path, model=big, epoch=2, global_step=2, config={}, encoder="conv4")
    assert read_checkpoint(path)["epoch"] == 1 and no_temporaries(disk)


def test_resume_on_a_full_disk(small_disk, tiny_cache, capsys):
    disk = small_disk("2m")
    if disk is None:
        pytest.skip("mounting a tmpfs is not permitted here (the simulated test covers it)")
    cfg = disk / "c.json"
    cfg.write_text(json.dumps(run_config(tiny_cache, disk / "run")))
    assert main(["train", "--config", str(cfg)]) == 0
    fill(disk)
    capsys.readouterr()
    assert main(["train", "--config", str(cfg), "--set", "train.epochs=2", "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no space left on device" in err[0], err
    assert read_checkpoint(disk / "run" / "last.pt")["epoch"] == 1
    assert no_temporaries(disk / "run")


def test_train_and_resume_in_a_read_only_folder(small_disk, tiny_cache, tmp_path, capsys):
    disk = small_disk("2m")
    if disk is None:
        pytest.skip("mounting a tmpfs is not permitted here")
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(run_config(tiny_cache, disk / "run")))
    assert main(["train", "--config", str(cfg)]) == 0
    r = subprocess.run(["mount", "-o", "remount,ro", str(disk)], capture_output=True)
    if r.returncode != 0:
        pytest.skip("remounting read-only is not permitted here")
    capsys.readouterr()
    assert main(["train", "--config", str(cfg), "--set", "train.epochs=2", "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "read-only file system" in err[0], err
    other = tmp_path / "c2.json"
    other.write_text(json.dumps(run_config(tiny_cache, disk / "new_run")))
    assert main(["train", "--config", str(other)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write to" in err[0] and "new_run" in err[0], err
    assert read_checkpoint(disk / "run" / "last.pt")["epoch"] == 1
