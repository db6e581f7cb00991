"""A short training run: checkpoints, config, fixed validation episodes, TensorBoard."""

import json

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fewshot_sparse.config import load_config
from fewshot_sparse.engine.checkpoint import read_checkpoint
from fewshot_sparse.engine.train import train
from fewshot_sparse.errors import CheckpointError, FewshotSparseError


def test_short_training_run_writes_checkpoints_and_tensorboard(tiny_config):
    cfg = tiny_config(epochs=2, batches_per_epoch=3)
    run = train(cfg, progress=False)
    assert sorted(p.name for p in run.iterdir()) == [
        "best.pt", "config.json", "last.pt", "tb", "val_episodes.npz"]
    assert not list(run.glob(".*tmp"))

    last = read_checkpoint(run / "last.pt")
    assert last["epoch"] == 2 and last["global_step"] == 6
    assert last["encoder"] == "conv4"
    assert last["config"] == cfg.to_dict()
    assert 0.0 <= last["best_accuracy"] <= 1.0
    assert read_checkpoint(run / "best.pt")["best_accuracy"] == last["best_accuracy"]
    # The schedule: lr 0.05, x0.5 from epoch 2 on; after 2 epochs LambdaLR points at epoch 3.
    assert last["scheduler"]["last_epoch"] == 2
    assert last["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.025)
    assert last["optimizer"]["param_groups"][0]["nesterov"] is True

    # The saved config loads back to the same Config.
    assert load_config(run / "config.json") == cfg
    assert json.loads((run / "config.json").read_text())["encoder"]["name"] == "conv4"

    acc = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    tags = acc.Tags()["scalars"]
    for tag in ["train/loss", "train/accuracy", "train/active_fraction",
                "train/solver_iterations", "train/gap_max", "train/unconverged", "lr",
                "val/accuracy", "val/active_fraction", "val/solver_iterations",
                "val/gap_max", "val/unconverged"]:
        assert tag in tags, tag
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2, 3, 4, 5, 6]
    assert [e.step for e in acc.Scalars("val/accuracy")] == [3, 6]
    lrs = [e.value for e in acc.Scalars("lr")]
    assert lrs[:3] == pytest.approx([0.05] * 3) and lrs[3:] == pytest.approx([0.025] * 3)
    assert all(e.value > 0 for e in acc.Scalars("train/solver_iterations"))
    # Feature-usage figures of the validation episodes.
    assert any(t.startswith("val_usage/") for t in acc.Tags()["images"])


def test_refuses_to_overwrite_and_to_resume_nothing(tiny_config):
    cfg = tiny_config(epochs=1, batches_per_epoch=1, head="protonet")
    with pytest.raises(CheckpointError, match="nothing to resume"):
        train(cfg, resume=True, progress=False)
    train(cfg, progress=False)
    with pytest.raises(FewshotSparseError, match="already holds a run"):
        train(cfg, progress=False)


def test_resume_with_another_encoder_is_refused(tiny_config):
    cfg = tiny_config(epochs=1, batches_per_epoch=1, head="protonet")
    train(cfg, progress=False)
    other = tiny_config(epochs=2, batches_per_epoch=1, head="protonet", encoder="resnet12")
    with pytest.raises(CheckpointError, match="encoder 'conv4'"):
        train(other, resume=True, progress=False)


def test_image_size_mismatch_is_a_config_error(tiny_config):
    from fewshot_sparse.errors import ConfigError

    cfg = tiny_config(overrides=["data.image_size=32"])
    with pytest.raises(ConfigError, match="data.image_size is 32"):
        train(cfg, progress=False)
