"""The rendered shapes world: deterministic images whose pixels follow each factor."""

import numpy as np
import pytest
import torch

from fewshot_sparse.errors import ConfigError
from fewshot_sparse.identifiability.shapes import SHAPES_FACTORS, ShapesWorld, hsv_to_rgb, render


def _z(n, **fixed):
    """n latents at 0 (the middle of every range) except the named factors."""
    z = np.zeros((n, len(SHAPES_FACTORS)))
    for name, values in fixed.items():
        z[:, SHAPES_FACTORS.index(name)] = values
    return z


def _object_mask(img):
    # objects have value 0.95, backgrounds 0.35: the brightest channel tells them apart
    return img.max(axis=1) > 0.65  # [n, H, W]


def test_hsv_matches_known_colours():
    rgb = hsv_to_rgb(np.array([0.0, 1 / 3, 2 / 3, 0.5]), np.ones(4), np.ones(4))
    assert np.allclose(rgb, [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 1, 1]])
    grey = hsv_to_rgb(np.array([0.3]), np.array([0.0]), np.array([0.4]))
    assert np.allclose(grey, 0.4)


def test_position_scale_and_colours_follow_their_factors():
    s = np.sqrt(3) * 0.9
    sweep = np.linspace(-s, s, 7)
    size = 32
    cols = np.arange(size)[None, None, :]
    rows = np.arange(size)[None, :, None]
    mask = _object_mask(render(_z(7, x=sweep), size))
    cx = (mask * cols).sum((1, 2)) / mask.sum((1, 2))
    assert np.all(np.diff(cx) > 1.0)  # the object moves right as x grows
    mask = _object_mask(render(_z(7, y=sweep), size))
    cy = (mask * rows).sum((1, 2)) / mask.sum((1, 2))
    assert np.all(np.diff(cy) > 1.0)
    area = _object_mask(render(_z(7, scale=sweep), size)).sum((1, 2))
    assert np.all(np.diff(area) > 0)
    img = render(_z(2, bg_hue=[-s, s]), size)
    assert not np.allclose(img[0, :, 0, 0], img[1, :, 0, 0])  # corner = background
    assert np.allclose(img[0, :, 16, 16], img[1, :, 16, 16], atol=1e-6)  # centre = object
    img = render(_z(2, object_hue=[-s, s]), size)
    assert np.allclose(img[0, :, 0, 0], img[1, :, 0, 0])
    assert not np.allclose(img[0, :, 16, 16], img[1, :, 16, 16])


def test_orientation_and_shape_change_the_silhouette_only():
    s = np.sqrt(3) * 0.9
    a = render(_z(3, orientation=[-s, 0, s]))
    m = _object_mask(a)
    assert (m[0] != m[2]).sum() > 10 and (m[0] != m[1]).sum() > 10
    b = _object_mask(render(_z(2, shape=[-s, s])))
    assert b[1].sum() > b[0].sum() + 10  # a rounded rectangle covers more than a concave diamond


def test_world_is_deterministic_and_tasks_have_image_shape():
    a = ShapesWorld(k=2, n_way=3, n_shot=2, n_query=3, seed=4, noise=0.05)
    b = ShapesWorld(k=2, n_way=3, n_shot=2, n_query=3, seed=4, noise=0.05)
    ta, tb = a.test_tasks(3), b.test_tasks(3)
    assert ta.support_images.shape == (3, 6, 3, 32, 32) and ta.query_images.shape == (3, 9, 3, 32, 32)
    assert torch.equal(ta.support_images, tb.support_images)
    assert (ta.factors.sum(1) == 2).all() and ta.factors.shape == (3, 7)
    za, xa = a.sample_points(50, seed=1)
    zb, xb = b.sample_points(50, seed=1)
    assert torch.equal(xa, xb) and torch.equal(za, zb) and xa.shape == (50, 3, 32, 32)
    batches = list(a.test_batches(5, 2))
    assert [bt.n_tasks for bt in batches] == [2, 2, 1]


def test_task_supports_restrict_training_subsets_only():
    w = ShapesWorld(k=2, n_way=2, n_shot=1, n_query=1, task_supports=3, seed=0)
    stream = w.train_stream(16)
    seen = {tuple(np.flatnonzero(f)) for _ in range(3) for f in next(stream).factors.numpy()}
    assert seen <= {tuple(s) for s in w.support_pool} and len(w.support_pool) == 3
    test = {tuple(np.flatnonzero(f)) for f in w.test_tasks(40).factors.numpy()}
    assert len(test) > 3
    with pytest.raises(ConfigError, match="task_supports"):
        ShapesWorld(k=2, task_supports=22)
    with pytest.raises(ValueError, match="factors"):
        render(np.zeros((2, 5)))


def test_separated_factors_need_diverse_supports():
    from fewshot_sparse.identifiability.tasks import separated_factors

    # {0,1} alone: neither factor separable; adding {0,2} and {1,2} separates all three
    assert not separated_factors(np.array([[0, 1]]), 4).any()
    assert separated_factors(np.array([[0, 1], [0, 2], [1, 2]]), 4).tolist() == [True] * 3 + [False]
