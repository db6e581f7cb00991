"""EpisodicModel, meta_train_step and run_episodes on small synthetic episodes."""

import pytest
import torch

from fewshot_sparse.data.episodes import EpisodeBatch
from fewshot_sparse.encoders import build_encoder
from fewshot_sparse.engine.run_episodes import run_episodes
from fewshot_sparse.engine.step import meta_train_step
from fewshot_sparse.heads import build_head
from fewshot_sparse.model import EpisodicModel

STEP_KEYS = {"loss", "accuracy", "active_fraction", "solver_iterations", "gap_max",
             "unconverged"}


def episodes(b=2, n=3, k=2, q=4, shape=(1, 16, 16), seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = lambda m: torch.arange(n).repeat_interleave(m).repeat(b, 1)  # noqa: E731
    return EpisodeBatch(
        support_images=torch.rand(b, n * k, *shape, generator=g), support_labels=labels(k),
        query_images=torch.rand(b, n * q, *shape, generator=g), query_labels=labels(q),
        class_ids=torch.arange(n).repeat(b, 1), n_way=n, n_shot=k, n_query=q)


def conv_model(head="group_lasso_svm", **kw):
    torch.manual_seed(0)
    head_kw = {"lambda1": 0.05, "tol": 1e-4} if head == "group_lasso_svm" else {}
    return EpisodicModel(build_encoder("conv4", in_channels=1, hidden=16),
                         build_head(head, **{**head_kw, **kw}))


def test_support_and_query_encoded_in_one_pass():
    model = conv_model().eval()
    calls = []
    model.encoder.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    batch = episodes()
    support, query = model.features(batch)
    assert calls == [2 * (6 + 12)]
    assert support.shape == (2, 6, 16) and query.shape == (2, 12, 16)
    with torch.no_grad():
        expected = model.encoder(batch.query_images[1])
    assert torch.allclose(query[1], expected, atol=1e-6)
    out = model(batch)
    assert out.logits.shape == (2, 12, 3) and out.weights.shape == (2, 16, 3)
    assert out.active.shape == (2, 16) and out.info is not None


def test_meta_train_step_updates_weights_and_reports():
    model = conv_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.encoder.parameters()]
    stats = meta_train_step(model, episodes(), opt, label_smoothing=0.1)
    assert set(stats) == STEP_KEYS and all(isinstance(v, float) for v in stats.values())
    assert stats["solver_iterations"] >= 1 and stats["unconverged"] == 0
    assert 0 <= stats["active_fraction"] <= 1 and 0 <= stats["accuracy"] <= 1
    assert any(not torch.equal(a, p) for a, p in zip(before, model.encoder.parameters()))


def test_meta_train_step_on_vector_data_learns():
    # The MLP encoder path the identifiability benchmark uses: loss goes down.
    torch.manual_seed(0)
    model = EpisodicModel(build_encoder("mlp", in_features=6, hidden=[16], out_features=8),
                          build_head("protonet"))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    means = torch.randn(3, 6) * 2

    def batch(seed):
        g = torch.Generator().manual_seed(seed)
        b = episodes(b=4, n=3, k=2, q=5, shape=(6,))
        b.support_images = means[b.support_labels] + torch.randn(4, 6, 6, generator=g)
        b.query_images = means[b.query_labels] + torch.randn(4, 15, 6, generator=g)
        return b

    first = [meta_train_step(model, batch(i), opt)["loss"] for i in range(3)]
    for i in range(3, 40):
        meta_train_step(model, batch(i), opt)
    last = [meta_train_step(model, batch(i), opt)["loss"] for i in range(40, 43)]
    assert sum(last) < sum(first)


def test_augment_is_applied_on_the_device_batch():
    seen = []

    def augment(b):
        seen.append(b.support_images.device)
        return b

    model = conv_model(head="protonet")
    stats = meta_train_step(model, episodes(), torch.optim.SGD(model.parameters(), lr=0.1),
                            augment=augment)
    assert seen == [torch.device("cpu")]
    assert stats["solver_iterations"] == 0 and stats["unconverged"] == 0


def test_run_episodes_per_episode_results_and_mode_restored():
    model = conv_model()
    model.train()
    batches = [episodes(seed=0), episodes(b=3, seed=1)]
    res = run_episodes(model, batches)
    assert model.training
    assert res.n_episodes == 5
    assert res.accuracy.shape == res.loss.shape == (5,)
    assert res.active.shape == res.group_norms.shape == (5, 16) and res.active.dtype == torch.bool
    assert torch.equal(res.active, res.group_norms > 0)
    assert res.class_ids.shape == (5, 3)
    assert res.iterations.shape == res.gap.shape == res.converged.shape == (5,)
    # Per-episode accuracy matches a direct evaluation of the second batch's first task.
    model.eval()
    with torch.no_grad():
        out = model(batches[1])
    acc = (out.logits[0].argmax(-1) == batches[1].query_labels[0]).float().mean()
    assert res.accuracy[2] == pytest.approx(float(acc))
    s = res.summary()
    assert set(s) == {"accuracy", "loss"} | STEP_KEYS - {"accuracy", "loss"}


def test_run_episodes_normalize_and_closed_form_head():
    calls = []

    def normalize(b):
        calls.append(1)
        return b

    res = run_episodes(conv_model(head="protonet"), [episodes()], normalize=normalize)
    assert calls == [1] and res.iterations is None
    assert set(res.summary()) == {"accuracy", "loss", "active_fraction"}


def test_float64_model_keeps_float64():
    model = conv_model().double()
    b = episodes()
    b.support_images, b.query_images = b.support_images.double(), b.query_images.double()
    assert model(b).logits.dtype == torch.float64


@pytest.mark.gpu
def test_amp_and_channels_last_on_cuda():
    model = conv_model().cuda().to(memory_format=torch.channels_last)
    model.channels_last = True
    b = episodes().to("cuda")
    support, _ = model.features(b, amp=True)
    assert support.dtype == torch.float32
    out = model(b, amp=True)
    assert out.logits.dtype == torch.float32
    stats = meta_train_step(model, episodes(), torch.optim.SGD(model.parameters(), lr=0.1),
                            amp=True)
    assert stats["unconverged"] == 0
