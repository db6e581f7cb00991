"""Resuming gives exactly the run that was never interrupted."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from fewshot_sparse.engine.checkpoint import read_checkpoint
from fewshot_sparse.engine.train import train


def final_state(run_dir):
    return read_checkpoint(run_dir / "last.pt")


def assert_same_run(a, b):
    assert a["epoch"] == b["epoch"] and a["global_step"] == b["global_step"]
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    mom_a = [s["momentum_buffer"] for s in a["optimizer"]["state"].values()]
    mom_b = [s["momentum_buffer"] for s in b["optimizer"]["state"].values()]
    assert all(torch.equal(x, y) for x, y in zip(mom_a, mom_b))
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"]
    assert a["best_accuracy"] == b["best_accuracy"]


@pytest.mark.slow
def test_resume_after_epoch_k_equals_uninterrupted_run(tiny_config):
    # ResNet-12 with dropout and DropBlock: resume must also restore the random masks.
    full = train(tiny_config("full", encoder="resnet12", epochs=3), progress=False)
    part = tiny_config("part", encoder="resnet12", epochs=1)
    train(part, progress=False)
    resumed = tiny_config("part", encoder="resnet12", epochs=3)
    train(resumed, resume=True, progress=False)
    assert_same_run(final_state(full), final_state(part_dir(resumed)))


def part_dir(cfg):
    from pathlib import Path

    return Path(cfg.out_dir)


SCRIPT = """
import sys
from fewshot_sparse.config import load_config
from fewshot_sparse.engine.train import train
train(load_config(sys.argv[1]), progress=False)
"""


@pytest.mark.slow
def test_process_killed_mid_epoch_then_resumed(tiny_config, tmp_path):
    epochs, per_epoch = 3, 6
    kw = dict(encoder="resnet12", epochs=epochs, batches_per_epoch=per_epoch)
    reference = final_state(train(tiny_config("reference", **kw), progress=False))

    cfg = tiny_config("killed", **kw)
    cfg_path = tmp_path / "killed.json"
    cfg.save(cfg_path)
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), str(cfg_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    last = part_dir(cfg) / "last.pt"
    deadline = time.monotonic() + 300
    try:
        while not last.exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no checkpoint after 300 s"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)  # in the middle of epoch 2
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    killed_at = read_checkpoint(last)["epoch"]
    assert killed_at < epochs, "the run finished before it could be killed"

    train(cfg, resume=True, progress=False)
    assert_same_run(reference, final_state(part_dir(cfg)))
