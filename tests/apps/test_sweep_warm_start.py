"""Warm starts along the lambda path: the sweep walks each batch of episodes from the
largest lambda1 to the smallest, starting each point from the previous one's dual
solution; it must give the same points as cold solves, in fewer solver iterations."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from fewshot_sparse.analysis.lambda_path import COLUMNS
from fewshot_sparse.api import sweep
from fewshot_sparse.cli import main

WAY, SHOT, QUERY, D, EPISODES = 4, 3, 3, 48, 10


def relu_cache(root, smoothing=0.0, seed=0):
    """A feature cache written by hand in the layout of apps/features.py: ReLU features
    max(N(0,1), 0) with a class signal, one shot."""
    rng = np.random.default_rng(seed)
    folder = root / f"{SHOT}shot"
    folder.mkdir(parents=True)
    means = rng.standard_normal((EPISODES, WAY, D))

    def draw(n):
        labels = np.tile(np.repeat(np.arange(WAY), n), (EPISODES, 1))
        noise = rng.standard_normal((EPISODES, WAY * n, D))
        x = np.take_along_axis(means, labels[..., None], axis=1) + noise
        return np.maximum(x, 0).astype(np.float32), labels.astype(np.int64)

    (s, s_lab), (q, q_lab) = draw(SHOT), draw(QUERY)
    for name, a in (("support", s), ("query", q), ("support_labels", s_lab),
                    ("query_labels", q_lab),
                    ("class_ids", np.tile(np.arange(WAY), (EPISODES, 1)))):
        np.save(folder / f"{name}.npy", a)
    meta = {"format": "fewshot-sparse-features/1", "way": WAY, "query": QUERY,
            "dtype": "float32", "n_features": D,
            "head": {"name": "group_lasso_svm", "kwargs": {"smoothing": smoothing},
                     "values": {}},
            "shots": {str(SHOT): {"dir": f"{SHOT}shot", "episodes": EPISODES,
                                  "encoder_seconds": None}}}
    (root / "features.json").write_text(json.dumps(meta))
    return root


def both(cache, tmp_path, **kw):
    """The same sweep cold and warm; per grid point (cold, warm)."""
    kw = {"reference_heads": (), "progress": False, "print_table": False, "device": "cpu",
          "tasks_per_batch": 4, **kw}  # 10 episodes: batches of 4, 4 and 2
    cold = sweep(cache, warm_start=False, out_dir=tmp_path / "cold", **kw)
    warm = sweep(cache, warm_start=True, out_dir=tmp_path / "warm", **kw)
    assert (cold.warm_start, warm.warm_start) == (False, True)
    return cold, warm


def total_iterations(report) -> float:
    return sum(p.iterations_mean * p.episodes for p in report.points if p.kind == "path")


@pytest.mark.parametrize("smoothing,grid", [
    (0.0, {"lambda_ratio_grid": [0.8, 0.6, 0.45, 0.3, 0.2, 0.12, 0.07, 0.04]}),
    (1.0, {"lambda1_grid": [3.0, 2.0, 1.4, 1.0, 0.7, 0.5, 0.3]}),
])
def test_warm_path_gives_the_cold_points_in_fewer_iterations(tmp_path, smoothing, grid):
    cache = relu_cache(tmp_path / "feats", smoothing=smoothing)
    # the sweep solves in float32 (as cached): 1e-6 is about as tight as it goes
    cold, warm = both(cache, tmp_path, head_kwargs={"tol": 1e-6, "max_iter": 300}, **grid)
    n = len(next(iter(grid.values())))
    assert len(cold.points) == len(warm.points) == n
    used = []
    for c, w in zip(cold.points, warm.points):
        assert (c.lambda1, c.lambda_ratio) == (w.lambda1, w.lambda_ratio)
        assert c.episodes == w.episodes == EPISODES
        assert c.unconverged == w.unconverged == 0
        # same points up to the solver's tolerance: at most one query prediction or one
        # feature at its threshold may differ over the 10 episodes
        assert w.accuracy == pytest.approx(c.accuracy, abs=1 / (WAY * QUERY * EPISODES))
        assert w.active_features == pytest.approx(c.active_features, abs=1 / EPISODES)
        assert w.mean_lambda1 == pytest.approx(c.mean_lambda1, rel=1e-12)
        assert c.iterations_max >= c.iterations_mean > 0
        used.append(c.active_features)
    assert used == sorted(used) and 0 < used[1] < used[-1] < D  # a real path
    # the first point starts cold in both; the rest start from their neighbour
    assert warm.points[0].iterations_mean == cold.points[0].iterations_mean
    assert total_iterations(warm) < total_iterations(cold)


def test_iterations_reach_the_files_and_the_table(tmp_path, capsys):
    cache = relu_cache(tmp_path / "feats")
    rep = sweep(cache, lambda1_grid=[1.0, 0.3], reference_heads=("svm_cs", "protonet"),
                out_dir=tmp_path / "sw", progress=True, device="cpu")
    out = capsys.readouterr().out
    assert f"{SHOT}-shot lambda1=0.3: accuracy" in out and "solver iterations" in out
    header = next(line for line in out.splitlines() if line.startswith("shot"))
    assert header.split()[-2:] == ["iters", "time"]
    rows = list(csv.DictReader(Path(rep.files["csv"]).read_text().splitlines()))
    assert list(rows[0]) == list(COLUMNS)
    assert "iterations_mean" in COLUMNS and "iterations_max" in COLUMNS
    by = {r["head"] + r["lambda1"]: r for r in rows}
    assert float(by["group_lasso_svm0.3"]["iterations_mean"]) > 0
    assert int(by["group_lasso_svm0.3"]["iterations_max"]) >= 1
    assert float(by["svm_cs"]["iterations_mean"]) > 0
    assert by["protonet"]["iterations_mean"] == by["protonet"]["iterations_max"] == ""
    record = json.loads(Path(rep.files["json"]).read_text())
    assert record["warm_start"] is True
    # seconds: time fitting that point, summed over its batches (to the microsecond: a
    # warm start that already meets tol takes well under a millisecond)
    assert all(p["seconds"] > 0 for p in record["points"])


def test_cli_no_warm_start(tmp_path, capsys):
    cache = relu_cache(tmp_path / "feats")
    for flag, expected in (([], True), (["--no-warm-start"], False)):
        assert main(["sweep", "--features", str(cache), "--lambda1-grid", "1,0.3",
                     "--reference", "none", "--quiet", "--device", "cpu",
                     "--out", str(tmp_path / str(expected)), *flag]) == 0
        record = json.loads((tmp_path / str(expected) / "sweep.json").read_text())
        assert record["warm_start"] is expected
    capsys.readouterr()


def test_learnable_lambdas_are_refused_in_one_line(tmp_path, capsys):
    cache = relu_cache(tmp_path / "feats")
    code = main(["sweep", "--features", str(cache), "--lambda-ratio-grid", "0.5,0.1",
                 "--head-set", "learn_lambdas=true", "--reference", "none", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and "learn_lambdas must be false" in err and len(err.splitlines()) == 1
