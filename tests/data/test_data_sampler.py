"""Episode sampler, loader, fixed episodes and augmentation."""

from __future__ import annotations

import hashlib
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from fewshot_sparse.data import (EpisodeAugment, EpisodeSampler, FixedEpisodes, Normalize, PreparedSplit,
                                 episode_loader, make_fixed_episodes, open_prepared, prepare)
from fewshot_sparse.errors import DataError


def synthetic_split(n_classes=12, per_class=30, size=8, channels=3, seed=0) -> PreparedSplit:
    """Image i has value (class, instance) in channels 0/1 so tests can decode it."""
    labels = np.repeat(np.arange(n_classes), per_class)
    rng = np.random.default_rng(seed)
    order = rng.permutation(labels.size)
    labels = labels[order]
    images = np.zeros((labels.size, size, size, channels), dtype=np.uint8)
    images[..., 0] = labels[:, None, None] * 10 + 5
    if channels > 1:
        images[..., 1] = (np.arange(labels.size) % 250)[:, None, None]
    return PreparedSplit.from_arrays(images, labels, [f"c{i}" for i in range(n_classes)])


@pytest.fixture(scope="module")
def disk_split(tmp_path_factory):
    """A prepared cache on disk (through the folder reader), for memmap / worker tests."""
    from _data_formats import write_folder

    root = tmp_path_factory.mktemp("tree")
    write_folder(root, per_class=25, size=16)
    out = prepare("folder", root, root.parent / (root.name + "_cache"), image_size=16, progress=False)
    return open_prepared(out)["train"]


def test_sampler_balance_disjoint_and_remapped():
    split = synthetic_split()
    sampler = EpisodeSampler(split, n_way=5, n_shot=3, n_query=4, tasks_per_batch=6, n_batches=10, seed=3)
    assert len(sampler) == 10
    for idx in sampler:
        assert len(idx) == 6 * 5 * 7 and (idx.n_way, idx.n_shot, idx.n_query, idx.n_tasks) == (5, 3, 4, 6)
        a = np.asarray(idx).reshape(6, 5, 7)
        for task in a:
            assert len(set(task.ravel().tolist())) == 35  # support and query disjoint, no repeats
            classes = split.labels[task]
            assert (classes == classes[:, :1]).all()  # one class per way
            assert len(set(classes[:, 0].tolist())) == 5  # n_way distinct classes


def test_loader_batch_layout():
    split = synthetic_split(size=6)
    batch = next(iter(episode_loader(split, n_way=4, n_shot=2, n_query=3, tasks_per_batch=5, n_batches=1, seed=0)))
    assert batch.support_images.shape == (5, 8, 3, 6, 6) and batch.query_images.shape == (5, 12, 3, 6, 6)
    assert batch.support_images.dtype == torch.float32 and batch.support_images.is_contiguous()
    assert 0.0 <= batch.support_images.min() and batch.support_images.max() <= 1.0
    assert batch.support_labels.tolist() == [[0, 0, 1, 1, 2, 2, 3, 3]] * 5
    assert batch.query_labels.tolist() == [[0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]] * 5
    assert batch.class_ids.shape == (5, 4) and (batch.n_way, batch.n_shot, batch.n_query) == (4, 2, 3)
    # images agree with labels and class_ids (class code in channel 0)
    code_s = torch.round(batch.support_images[:, :, 0, 0, 0] * 255).long()
    code_q = torch.round(batch.query_images[:, :, 0, 0, 0] * 255).long()
    cid = batch.class_ids
    assert torch.equal(code_s, torch.gather(cid, 1, batch.support_labels) * 10 + 5)
    assert torch.equal(code_q, torch.gather(cid, 1, batch.query_labels) * 10 + 5)


def test_variable_way_and_shot():
    split = synthetic_split()
    sampler = EpisodeSampler(split, n_way=[3, 5], n_shot=range(1, 6), n_query=2, tasks_per_batch=2,
                             n_batches=40, seed=0)
    seen = {(b.n_way, b.n_shot) for b in sampler}
    assert {w for w, _ in seen} == {3, 5} and {s for _, s in seen} == {1, 2, 3, 4, 5}
    for batch in episode_loader(split, n_way=[3, 5], n_shot=range(1, 6), n_query=2, tasks_per_batch=2,
                                n_batches=5, seed=0):
        assert batch.support_images.shape[:2] == (2, batch.n_way * batch.n_shot)


def test_determinism_and_resume():
    split = synthetic_split()
    kw = dict(n_way=5, n_shot=2, n_query=2, tasks_per_batch=3, n_batches=8)
    a = [list(b) for b in EpisodeSampler(split, seed=7, **kw)]
    b = [list(b) for b in EpisodeSampler(split, seed=7, **kw)]
    c = [list(b) for b in EpisodeSampler(split, seed=8, **kw)]
    resumed = [list(b) for b in EpisodeSampler(split, seed=7, start_batch=5, **kw)]
    assert a == b and a != c and resumed == a[5:]


def batches_digest(split, **kw) -> str:
    h = hashlib.sha256()
    for batch in episode_loader(split, **kw):
        h.update(batch.support_images.numpy().tobytes() + batch.query_images.numpy().tobytes()
                 + batch.class_ids.numpy().tobytes())
    return h.hexdigest()


def test_same_batches_across_workers_and_processes(disk_split):
    kw = dict(n_way=2, n_shot=3, n_query=4, tasks_per_batch=2, n_batches=6, seed=11)
    d0 = batches_digest(disk_split, num_workers=0, **kw)
    assert d0 == batches_digest(disk_split, num_workers=2, **kw)
    code = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(__import__('pathlib').Path(__file__).parent)!r})
        from fewshot_sparse.data import open_prepared
        from test_data_sampler import batches_digest
        print(batches_digest(open_prepared({str(disk_split.root)!r})["train"], **{kw!r}))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == d0


def test_memmap_and_pickling(disk_split):
    assert isinstance(disk_split.images, np.memmap)
    blob = pickle.dumps(disk_split)
    assert len(blob) < disk_split.images.nbytes  # the memmap is reopened, not copied
    back = pickle.loads(blob)
    assert isinstance(back.images, np.memmap) and np.array_equal(back.images, disk_split.images)


def test_too_few_images_and_too_many_ways():
    split = synthetic_split(n_classes=4, per_class=5)
    with pytest.raises(DataError, match=r"split train: class 'c\d' has 5 images, fewer than n_shot \+ n_query = 6"):
        EpisodeSampler(split, n_way=2, n_shot=3, n_query=3)
    with pytest.raises(DataError, match="split train: n_way=5 but the split has 4 classes"):
        EpisodeSampler(split, n_way=5, n_shot=1, n_query=1)
    with pytest.raises(DataError, match="n_shot must be a positive integer"):
        EpisodeSampler(split, n_way=2, n_shot=0, n_query=1)


@pytest.mark.parametrize("suffix", [".json", ".npz"])
def test_fixed_episodes_roundtrip(tmp_path, suffix):
    split = synthetic_split()
    fixed = make_fixed_episodes(split, n_way=5, n_shot=1, n_query=3, n_episodes=7, seed=2)
    assert fixed.indices.shape == (7, 5, 4)
    back = FixedEpisodes.load(fixed.save(tmp_path / f"episodes{suffix}"))
    assert np.array_equal(back.indices, fixed.indices) and (back.n_way, back.n_shot, back.n_query) == (5, 1, 3)
    # the loader replays them in order, tasks_per_batch at a time (last batch short)
    batches = list(episode_loader(split, tasks_per_batch=3, n_batches=None, fixed=back))
    assert [b.n_tasks for b in batches] == [3, 3, 1]
    ids = torch.cat([b.class_ids for b in batches]).numpy()
    assert np.array_equal(ids, split.labels[fixed.indices[:, :, 0]])
    # fixed episodes are the sampler's episodes for that seed
    first = next(iter(EpisodeSampler(split, n_way=5, n_shot=1, n_query=3, seed=2)))
    assert list(first) == fixed.indices[0].ravel().tolist()


def test_fixed_episodes_checks(tmp_path):
    fixed = make_fixed_episodes(synthetic_split(), n_way=5, n_shot=1, n_query=3, n_episodes=4, seed=0)
    with pytest.raises(DataError, match="split train has 30"):
        list(episode_loader(synthetic_split(n_classes=1, per_class=30), n_batches=None, fixed=fixed))
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(DataError, match="not a fixed-episodes file"):
        FixedEpisodes.load(tmp_path / "bad.json")


def test_augment_is_seeded_shape_preserving_and_normalises():
    split = synthetic_split(size=12)
    batch = next(iter(episode_loader(split, n_way=3, n_shot=2, n_query=2, tasks_per_batch=2, n_batches=1)))
    aug = EpisodeAugment(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), padding=2)
    a = aug(batch, generator=torch.Generator().manual_seed(0))
    b = aug(batch, generator=torch.Generator().manual_seed(0))
    c = aug(batch, generator=torch.Generator().manual_seed(1))
    assert a.support_images.shape == batch.support_images.shape
    assert torch.equal(a.support_images, b.support_images) and not torch.equal(a.support_images, c.support_images)
    assert torch.equal(a.support_labels, batch.support_labels)
    norm = Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))(batch)
    assert torch.allclose(norm.query_images * 0.25 + 0.5, batch.query_images)
    # no-op augmentation = normalisation alone
    plain = EpisodeAugment((0.5,) * 3, (0.25,) * 3, padding=0, brightness=0, contrast=0, saturation=0, hflip=False)
    assert torch.allclose(plain(batch).support_images, norm.support_images)
    # crop with padding shifts content and fills zeros (before normalisation)
    x = torch.ones(64, 1, 8, 8)
    crop = EpisodeAugment((0.0,), (1.0,), padding=3, brightness=0, contrast=0, saturation=0, hflip=False)
    y = crop(x)
    assert y.shape == x.shape and ((y == 0) | (y == 1)).all() and (y == 0).any() and (y.sum((1, 2, 3)) >= 25).all()


def test_augment_flip_and_grey_images():
    x = torch.zeros(200, 1, 4, 4)
    x[..., 0] = 1.0  # left column lit
    flip = EpisodeAugment((0.0,), (1.0,), padding=0, brightness=0, contrast=0, saturation=0, seed=0)(x)
    flipped = flip[..., 3].sum((1, 2)) > 0
    assert 50 < flipped.sum() < 150  # about half flipped
    jitter = EpisodeAugment((0.0,), (1.0,), padding=0, seed=0)(torch.rand(10, 1, 8, 8))
    assert jitter.min() >= 0 and jitter.max() <= 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_augment_on_gpu_matches_cpu_randomness():
    split = synthetic_split(size=12)
    batch = next(iter(episode_loader(split, n_way=3, n_shot=2, n_query=2, n_batches=1, pin_memory=True)))
    aug = EpisodeAugment(padding=2)
    cpu = aug(batch, generator=torch.Generator().manual_seed(0))
    gpu = aug(batch.to("cuda"), generator=torch.Generator().manual_seed(0))
    assert gpu.support_images.is_cuda
    torch.testing.assert_close(gpu.support_images.cpu(), cpu.support_images, atol=1e-5, rtol=1e-5)
    g = torch.Generator(device="cuda").manual_seed(0)
    assert aug(batch.to("cuda"), generator=g).query_images.is_cuda


def test_crop_paths_agree():
    from fewshot_sparse.data.augment import _crop_cpu, _crop_gather

    g = torch.Generator().manual_seed(0)
    x = torch.rand(40, 3, 10, 12, generator=g)
    oy, ox = torch.randint(0, 9, (40,), generator=g), torch.randint(0, 9, (40,), generator=g)
    assert torch.equal(_crop_cpu(x, oy, ox, 4), _crop_gather(x, oy, ox, 4))
