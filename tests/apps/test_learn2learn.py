"""learn2learn interop: its tasks become episodes (the same split as its own
partition_task), and its task sets drive training and evaluation.

CI installs learn2learn (.ci/run sets FEWSHOT_SPARSE_REQUIRE_LEARN2LEARN=1, so a missing
install fails there instead of skipping)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from fewshot_sparse.api import episode_from_task, episodes_from_tasks, evaluate_tasks, train_on_tasks
from fewshot_sparse.data import open_prepared
from fewshot_sparse.data.augment import Normalize
from fewshot_sparse.engine.run_episodes import run_episodes
from fewshot_sparse.errors import DataError
from fewshot_sparse.heads import build_head
from fewshot_sparse.encoders import build_encoder
from fewshot_sparse.model import EpisodicModel

if os.environ.get("FEWSHOT_SPARSE_REQUIRE_LEARN2LEARN") == "1":
    import learn2learn as l2l  # noqa: F401  (must be installed: CI installs it)
else:
    l2l = pytest.importorskip(
        "learn2learn", reason="learn2learn is not installed; install it with the README's "
                              "command (CI does)")

from learn2learn.data.transforms import KShots, LoadData, NWays, RemapLabels  # noqa: E402
from learn2learn.data.utils import partition_task  # noqa: E402


@pytest.fixture(scope="module")
def taskset(glyphs16):
    split = open_prepared(glyphs16)["test"]
    images = torch.from_numpy(np.array(split.images)).permute(0, 3, 1, 2).float() / 255
    dataset = l2l.data.MetaDataset(torch.utils.data.TensorDataset(
        images, torch.from_numpy(split.labels)))
    transforms = [NWays(dataset, 3), KShots(dataset, 2 + 3), LoadData(dataset),
                  RemapLabels(dataset)]
    return l2l.data.Taskset(dataset, task_transforms=transforms, num_tasks=16)


def test_task_becomes_the_episode_partition_task_makes(taskset):
    data, labels = taskset[0]
    ep = episode_from_task((data, labels), n_shot=2)
    (s_x, s_y), (q_x, q_y) = partition_task(data, labels, shots=2)
    assert (ep.n_way, ep.n_shot, ep.n_query) == (3, 2, 3)
    ref = episode_from_task(((s_x, s_y), (q_x, q_y)))
    for c in range(3):  # the same images in each class, support and query
        for mine, theirs, lab in ((ep.support_images, s_x, s_y), (ep.query_images, q_x, q_y)):
            got = mine[0][(ep.support_labels if mine is ep.support_images
                           else ep.query_labels)[0] == c]
            want = theirs[lab == labels.unique()[c]]
            assert torch.equal(got, want)
    assert torch.equal(ep.support_images, ref.support_images)
    assert ep.support_labels.tolist() == [[0, 0, 1, 1, 2, 2]]
    assert ep.class_ids.tolist() == [labels.unique().tolist()]


def test_bad_tasks_are_named(taskset):
    data, labels = taskset[0]
    with pytest.raises(DataError, match="needs n_shot >= 1"):
        episode_from_task((data, labels))
    with pytest.raises(DataError, match="n_shot=5 leaves none for the query"):
        episode_from_task((data, labels), n_shot=5)
    with pytest.raises(DataError, match="different numbers of samples"):
        episode_from_task((data[:-1], labels[:-1]), n_shot=2)


def small_model():
    torch.manual_seed(0)
    return EpisodicModel(build_encoder("conv4", in_channels=1, hidden=8),
                         build_head("group_lasso_svm", lambda1=0.05, tol=1e-3, max_iter=300))


def test_tasksets_drive_training_and_evaluation(taskset):
    model = small_model()
    before = [p.detach().clone() for p in model.parameters()]
    norm = Normalize([0.5], [0.25])
    history = train_on_tasks(model, taskset, n_shot=2, steps=2, tasks_per_batch=2,
                             lr=0.05, transform=norm)
    assert len(history) == 2 and all(torch.isfinite(torch.tensor(h["loss"])) for h in history)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    result = evaluate_tasks(model, taskset, n_shot=2, episodes=4, tasks_per_batch=2,
                            transform=norm, start=8)
    # The same numbers as the package's own loop on the converted tasks.
    batch = episodes_from_tasks([taskset[i] for i in range(8, 12)], n_shot=2)
    res = run_episodes(model, [batch], normalize=norm)
    assert result.episodes == 4
    assert result.accuracy == pytest.approx(float(res.accuracy.mean()), abs=1e-6)
    assert result.n_features == 8 and 0 <= result.active_fraction <= 1
