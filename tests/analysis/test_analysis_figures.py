"""Figures and exports are written, non-empty, and readable for large D."""

import csv

import matplotlib
import numpy as np

from fewshot_sparse.analysis import (
    compute_feature_usage,
    feature_usage_figures,
    save_feature_usage,
)


def _random_stats(t=30, d=200, seed=0):
    rng = np.random.default_rng(seed)
    active = rng.random((t, d)) < 0.1
    active[:, 3] = True
    norms = active * rng.random((t, d))
    classes = np.stack([rng.choice(12, 5, replace=False) for _ in range(t)])
    return compute_feature_usage(active, norms, classes, meta={"head": "x", "way": 5, "shot": 1})


def test_figures_for_tensorboard_are_matplotlib_figures():
    import matplotlib.pyplot as plt

    figs = feature_usage_figures(_random_stats())
    assert set(figs) == {"heatmap", "active_counts", "usage_curve", "overlap"}
    for fig in figs.values():
        assert isinstance(fig, matplotlib.figure.Figure)
        assert fig.axes[0].get_title()
        plt.close(fig)


def test_save_feature_usage_writes_everything(tmp_path):
    stats = _random_stats()
    paths = save_feature_usage(stats, tmp_path)
    for name in ("heatmap", "active_counts", "usage_curve", "overlap"):
        p = paths[name]
        assert p.suffix == ".png" and p.stat().st_size > 5000
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    z = np.load(paths["arrays"])
    assert z["active"].shape == (30, 200) and z["jaccard"].shape == (30, 30)
    rows = list(csv.DictReader(paths["features"].read_text().splitlines()))
    assert len(rows) == 200 and rows[0]["feature"] == "3" and rows[0]["n_tasks"] == "30"
    rows = list(csv.DictReader(paths["tasks"].read_text().splitlines()))
    assert len(rows) == 30 and len(rows[0]["class_ids"].split()) == 5
    assert paths["classes"].exists()
    assert "30 tasks, 200 features" in paths["summary"].read_text()


def test_large_d_heatmap_is_binned_and_degenerate_cases_work(tmp_path):
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(1)
    big = compute_feature_usage(rng.random((50, 16000)) < 0.02)
    fig = feature_usage_figures(big)["heatmap"]
    img = fig.axes[0].images[0].get_array()
    assert img.shape[1] <= 800 and "blocks" in fig.axes[0].get_title()
    plt.close("all")
    # no active feature at all, and a single task
    save_feature_usage(compute_feature_usage(np.zeros((3, 10), bool)), tmp_path / "empty")
    save_feature_usage(compute_feature_usage(np.ones((1, 10), bool)), tmp_path / "one")
    assert (tmp_path / "empty" / "heatmap.png").stat().st_size > 0
