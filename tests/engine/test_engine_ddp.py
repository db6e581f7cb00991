"""Data-parallel training: 2 gloo processes under torchrun split the episodes."""

import json
import socket
import subprocess
import sys

import pytest

from fewshot_sparse.engine.checkpoint import read_checkpoint
from fewshot_sparse.engine.distributed import DistInfo, my_batches


def test_batches_are_split_without_overlap():
    for n, world in [(10, 2), (10, 3), (7, 4), (3, 1)]:
        parts = [list(my_batches(n, DistInfo(r, world))) for r in range(world)]
        flat = sorted(b for p in parts for b in p)
        assert len(flat) == len(set(flat))                       # no overlap
        assert flat == list(range(n // world * world))           # all, less the remainder
        assert len({len(p) for p in parts}) == 1                 # same number of steps


SCRIPT = """
import json, os, sys
import torch
from fewshot_sparse.config import load_config
from fewshot_sparse.engine import train as train_mod

seen = []
original = train_mod.TrainingData.train_batches
def recording(self, numbers, **kwargs):
    seen.extend(numbers)
    return original(self, numbers, **kwargs)
train_mod.TrainingData.train_batches = recording

run = train_mod.train(load_config(sys.argv[1]), progress=False)
rank = os.environ["RANK"]
with open(os.path.join(sys.argv[2], f"rank{rank}.json"), "w") as f:
    json.dump({"batches": seen, "threads": torch.get_num_threads()}, f)
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_processes_gloo(tiny_config, tmp_path):
    epochs, per_epoch = 2, 4
    cfg = tiny_config("ddp", epochs=epochs, batches_per_epoch=per_epoch)
    cfg.save(tmp_path / "cfg.json")
    (tmp_path / "run.py").write_text(SCRIPT)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           f"--master_port={free_port()}", str(tmp_path / "run.py"),
           str(tmp_path / "cfg.json"), str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]

    seen = [json.loads((tmp_path / f"rank{r}.json").read_text())["batches"] for r in (0, 1)]
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == list(range(epochs * per_epoch))
    assert seen[0] == [0, 2, 4, 6] and seen[1] == [1, 3, 5, 7]

    run = tmp_path / "ddp"
    ckpt = read_checkpoint(run / "last.pt")
    assert ckpt["epoch"] == epochs
    assert ckpt["global_step"] == epochs * per_epoch // 2   # each step uses both ranks
    assert not any(k.startswith("module.") for k in ckpt["model"])
    assert len(list((run / "tb").glob("events.out.tfevents.*"))) == 1  # rank 0 only
