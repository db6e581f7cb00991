"""Checkpoints: atomic writes, and clear errors for a checkpoint of another model."""

import pytest
import torch

from fewshot_sparse.config import config_from_dict
from fewshot_sparse.engine.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from fewshot_sparse.errors import CheckpointError
from fewshot_sparse.model import build_model


def model_of(encoder, kwargs):
    return build_model(config_from_dict({"encoder": {"name": encoder, "kwargs": kwargs},
                                         "head": {"name": "protonet"}}))


def save(path, model, encoder):
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return save_checkpoint(path, model=model, epoch=3, global_step=30, config={"x": 1},
                           encoder=encoder, optimizer=opt)


def test_roundtrip_and_atomic_write(tmp_path):
    m = model_of("conv4", {"in_channels": 1, "hidden": 4})
    path = save(tmp_path / "ck" / "last.pt", m, "conv4")
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temporary left
    m2 = model_of("conv4", {"in_channels": 1, "hidden": 4})
    state = load_checkpoint(path, model=m2, encoder="conv4")
    assert state["epoch"] == 3 and state["global_step"] == 30
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(),
                                                 m2.state_dict().values()))
    assert "torch" in state["rng"]


def test_checkpoint_of_another_encoder(tmp_path):
    path = save(tmp_path / "a.pt", model_of("conv4", {"in_channels": 1, "hidden": 4}), "conv4")
    other = model_of("resnet12_metaoptnet", {"in_channels": 1, "channels": [4, 4, 4, 4]})
    with pytest.raises(CheckpointError, match="encoder 'conv4'.*'resnet12_metaoptnet'"):
        load_checkpoint(path, model=other, encoder="resnet12_metaoptnet")
    # Same name, other shapes: still a CheckpointError, not a RuntimeError.
    wider = model_of("conv4", {"in_channels": 1, "hidden": 8})
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(path, model=wider, encoder="conv4")


def test_missing_keys_corrupt_and_absent(tmp_path):
    torch.save({"format": 1, "model": {}}, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match="lacks epoch, global_step, config, encoder"):
        read_checkpoint(tmp_path / "partial.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        read_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        read_checkpoint(tmp_path / "none.pt")
    m = model_of("conv4", {"in_channels": 1, "hidden": 4})
    path = save_checkpoint(tmp_path / "noopt.pt", model=m, epoch=0, global_step=0,
                           config={}, encoder="conv4")
    with pytest.raises(CheckpointError, match="no optimizer state"):
        load_checkpoint(path, model=m, optimizer=torch.optim.SGD(m.parameters(), lr=1.0))
