"""train.accumulate = k: k micro-batches, one optimizer step, the same step as the whole
batch up to floating-point order; resume stays exact."""

import pytest
import torch

from fewshot_sparse.config import ModuleConfig
from fewshot_sparse.encoders import build_encoder
from fewshot_sparse.engine.checkpoint import read_checkpoint
from fewshot_sparse.engine.step import meta_train_step, split_batch
from fewshot_sparse.engine.train import train
from fewshot_sparse.errors import ConfigError
from fewshot_sparse.heads import build_head
from fewshot_sparse.model import EpisodicModel

from test_engine_resume import assert_same_run
from test_engine_step import episodes

HEADS = {"group_lasso_svm": {"lambda1": 0.05, "tol": 1e-5, "max_iter": 2000},
         "ridge": {}, "protonet": {}}


def mlp_model(head):
    torch.manual_seed(0)
    # No BatchNorm: every episode's loss depends on that episode alone.
    return EpisodicModel(build_encoder("mlp", in_features=256, hidden=(32,), out_features=12),
                         build_head(head, **HEADS[head]))


@pytest.mark.parametrize("head", sorted(HEADS))
def test_accumulated_steps_equal_one_big_batch(head):
    batch = episodes(b=4, n=3, k=2, q=3)
    params = {}
    for k in (1, 2, 4):
        model = mlp_model(head)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True,
                              weight_decay=5e-4)
        for _ in range(2):  # two steps: momentum buffers agree too
            stats = meta_train_step(model, batch, opt, label_smoothing=0.1, accumulate=k)
        params[k] = [p.detach().clone() for p in model.parameters()]
        if k == 1:
            ref_stats = stats
        else:
            assert stats["loss"] == pytest.approx(ref_stats["loss"], rel=1e-5)
            assert stats["accuracy"] == pytest.approx(ref_stats["accuracy"])
            assert stats["active_fraction"] == pytest.approx(ref_stats["active_fraction"])
    moved = sum(float((a - b).abs().max()) for a, b in
                zip(params[1], [p.detach() for p in mlp_model(head).parameters()]))
    assert moved > 1e-3  # the steps did change the weights
    for k in (2, 4):
        for a, b in zip(params[1], params[k]):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_split_batch_keeps_every_episode_in_order():
    batch = episodes(b=6)
    parts = split_batch(batch, 3)
    assert [p.n_tasks for p in parts] == [2, 2, 2]
    torch.testing.assert_close(torch.cat([p.support_images for p in parts]),
                               batch.support_images)
    torch.testing.assert_close(torch.cat([p.query_labels for p in parts]), batch.query_labels)
    with pytest.raises(ValueError, match="accumulate=4 must divide the batch's 6 tasks"):
        split_batch(batch, 4)


def mlp_config(tiny_config, accumulate):
    cfg = tiny_config(f"acc{accumulate}", tasks_per_batch=4, batches_per_epoch=2,
                      overrides=[f"train.accumulate={accumulate}"])
    cfg.encoder = ModuleConfig("mlp", {"in_features": 256, "hidden": [32], "out_features": 12})
    cfg.head = ModuleConfig("ridge", {})
    return cfg


def test_training_with_accumulation_matches_big_batches(tiny_config):
    # Augmentation on: it is drawn for the whole batch before the batch is cut.
    runs = {k: read_checkpoint(train(mlp_config(tiny_config, k), progress=False) / "last.pt")
            for k in (1, 4)}
    a, b = runs[1]["model"], runs[4]["model"]
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)


def test_resume_with_accumulation_is_exact(tiny_config):
    kw = dict(tasks_per_batch=4, batches_per_epoch=2, head="protonet",
              overrides=["train.accumulate=2"])
    full = train(tiny_config("full", **kw), progress=False)
    train(tiny_config("part", epochs=1, **kw), progress=False)
    resumed = tiny_config("part", **kw)
    train(resumed, resume=True, progress=False)
    assert_same_run(read_checkpoint(full / "last.pt"),
                    read_checkpoint(resumed.out_dir + "/last.pt"))


def test_accumulate_must_divide_tasks_per_batch(tiny_config):
    with pytest.raises(ConfigError, match=r"train.accumulate \(3\) must divide "
                                          r"train.tasks_per_batch \(4\)"):
        tiny_config(tasks_per_batch=4, overrides=["train.accumulate=3"])
    with pytest.raises(ConfigError, match="train.accumulate must be >= 1"):
        tiny_config(overrides=["train.accumulate=0"])
