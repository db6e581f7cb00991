"""The evaluation protocol on a tiny prepared cache and an untrained tiny model."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fewshot_sparse.config import config_from_dict
from fewshot_sparse.data.prepare import prepare
from fewshot_sparse.engine.checkpoint import save_checkpoint
from fewshot_sparse.apps.evaluate import evaluate
from fewshot_sparse.engine.report import EvalReport, ShotResult, mean_ci95
from fewshot_sparse.engine.run_episodes import EpisodeResults
from fewshot_sparse.errors import CheckpointError, ConfigError, DataError
from fewshot_sparse.model import build_model


def _write_folder_dataset(root, n_classes=6, per_class=8, size=12, seed=0):
    rng = np.random.default_rng(seed)
    for split in ("train", "val", "test"):
        for c in range(n_classes):
            d = root / split / f"{split}_class{c}"
            d.mkdir(parents=True)
            base = rng.integers(0, 256, (size, size, 3))
            for i in range(per_class):
                img = np.clip(base + rng.normal(0, 30, base.shape), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(d / f"{i}.png")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(prepared cache, checkpoint path) of a tiny Conv-4 + group-Lasso SVM model."""
    tmp = tmp_path_factory.mktemp("eval")
    _write_folder_dataset(tmp / "src")
    data = prepare("folder", tmp / "src", tmp / "cache", image_size=12, progress=False)
    cfg = config_from_dict({
        "data": {"root": str(data), "dataset": "folder", "image_size": 12},
        "encoder": {"name": "conv4", "kwargs": {"in_channels": 3, "hidden": 8, "n_blocks": 2}},
        "head": {"name": "group_lasso_svm", "kwargs": {"lambda1": 0.05, "lambda2": 1.0,
                                                       "max_iter": 300, "tol": 1e-3}},
        "out_dir": str(tmp / "run"),
    })
    torch.manual_seed(0)
    model = build_model(cfg)
    ckpt = save_checkpoint(tmp / "run" / "last.pt", model=model, epoch=1, global_step=1,
                           config=cfg.to_dict(), encoder=cfg.encoder.name)
    return data, ckpt


def test_ci_formula_matches_numpy():
    rng = np.random.default_rng(0)
    accs = rng.random(1000)
    mean, ci, std = mean_ci95(accs)
    assert mean == pytest.approx(np.mean(accs))
    assert std == pytest.approx(np.std(accs))
    assert ci == pytest.approx(1.96 * np.std(accs) / math.sqrt(1000))
    assert mean_ci95([0.5]) == (0.5, 0.0, 0.0)


def test_shot_result_from_episode_results():
    res = EpisodeResults(
        accuracy=torch.tensor([1.0, 0.5, 0.0, 0.5]), loss=torch.ones(4),
        active=torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]]).bool(),
        group_norms=torch.zeros(4, 4), class_ids=torch.zeros(4, 2, dtype=torch.long),
        iterations=torch.tensor([10, 20, 30, 40]), gap=torch.tensor([1e-5, 1e-3, 0.0, 0.0]),
        converged=torch.tensor([True, False, True, True]))
    r = ShotResult.from_results(1, res, seconds=1.0)
    assert r.accuracy == pytest.approx(0.5)
    assert r.ci95 == pytest.approx(1.96 * np.std([1, 0.5, 0, 0.5]) / 2)
    assert r.active_fraction == pytest.approx(7 / 16)
    assert r.active_features == pytest.approx(7 / 4)
    assert r.solver == {"mean_iterations": 25.0, "max_iterations": 40, "max_gap": pytest.approx(1e-3),
                        "unconverged": 1}
    rep = EvalReport("c.pt", "group_lasso_svm", {}, "d", "test", 5, 15, 0, [r])
    table = rep.table()
    assert "50.00 +-" in table and "25/40" in table


def test_evaluate_is_deterministic_and_reuses_episodes(tiny, tmp_path):
    data, ckpt = tiny
    kw = dict(data=data, way=3, shots=(1, 2), query=2, episodes=10, seed=7,
              tasks_per_batch=4, device="cpu", progress=False, print_table=False)
    a = evaluate(ckpt, out_dir=tmp_path / "a", **kw)
    files = [r.episodes_file for r in a.results]
    assert all(f is not None for f in files)
    mtimes = [__import__("os").stat(f).st_mtime_ns for f in files]
    b = evaluate(ckpt, out_dir=tmp_path / "b", **kw)
    assert [r.accuracy for r in a.results] == [r.accuracy for r in b.results]
    assert [r.episodes_file for r in b.results] == files
    assert [__import__("os").stat(f).st_mtime_ns for f in files] == mtimes  # reused
    assert all(r.episodes == 10 for r in a.results)
    for r in a.results:
        assert 0.0 <= r.accuracy <= 1.0 and r.ci95 >= 0
        assert 0.0 <= r.active_fraction <= 1.0
        assert r.solver is not None and r.solver["max_iterations"] >= 1
    js = json.loads((tmp_path / "a" / "eval_group_lasso_svm_3way.json").read_text())
    assert js["way"] == 3 and [r["shot"] for r in js["results"]] == [1, 2]

    from fewshot_sparse.data.fixed_episodes import FixedEpisodes

    other = evaluate(ckpt, out_dir=None, episodes_dir=tmp_path / "eps",
                     **{**kw, "seed": 8, "shots": (1,)})
    e7 = FixedEpisodes.load(files[0]).indices
    e8 = FixedEpisodes.load(other.results[0].episodes_file).indices
    assert e7.shape == e8.shape and not np.array_equal(e7, e8)


def test_evaluate_with_another_head_on_the_same_encoder(tiny, tmp_path, capsys):
    data, ckpt = tiny
    rep = evaluate(ckpt, data=data, way=3, shots=(1,), query=2, episodes=4, seed=1,
                   head="protonet", device="cpu", progress=False, out_dir=tmp_path)
    assert rep.head == "protonet" and rep.results[0].solver is None
    out = capsys.readouterr().out
    assert "protonet" in out and "accuracy (95% CI)" in out
    assert (tmp_path / "eval_protonet_3way.json").is_file()
    rep = evaluate(ckpt, data=data, way=3, shots=(1,), query=2, episodes=4, seed=1,
                   head_kwargs={"lambda1": 1e3}, device="cpu", progress=False,
                   print_table=False, overwrite=True)  # the run's eval/ may hold others
    assert rep.head == "group_lasso_svm" and rep.head_kwargs["lambda1"] == 1e3
    assert rep.results[0].active_fraction == 0.0  # lambda so large every feature is off


def test_evaluate_user_errors(tiny, tmp_path):
    data, ckpt = tiny
    kw = dict(device="cpu", progress=False, print_table=False, episodes=2, query=2, way=3)
    with pytest.raises(CheckpointError):
        evaluate(tmp_path / "missing.pt", **kw)
    with pytest.raises(DataError):
        evaluate(ckpt, data=tmp_path, **kw)  # not a prepared cache
    with pytest.raises(ConfigError):
        evaluate(ckpt, data=data, head="nope", **kw)
    with pytest.raises(ConfigError):
        evaluate(ckpt, data=data, head_kwargs={"nope": 1}, **kw)
    with pytest.raises(ConfigError):
        evaluate(ckpt, data=data, **{**kw, "way": 1})


def test_feature_usage_report(tiny, tmp_path):
    from fewshot_sparse.apps.inspect import feature_usage

    data, ckpt = tiny
    rep = feature_usage(ckpt, data=data, episodes=6, way=3, shot=2, query=2, device="cpu",
                        out_dir=tmp_path / "fu", progress=False)
    assert rep.stats.n_tasks == 6 and rep.stats.class_ids.shape == (6, 3)
    for name in ("heatmap", "active_counts", "usage_curve", "overlap"):
        assert rep.paths[name].stat().st_size > 0
    assert "mean query accuracy" in (tmp_path / "fu" / "summary.txt").read_text()
    header = (tmp_path / "fu" / "classes.csv").read_text().splitlines()[0]
    assert header.endswith("class_name")
    # default output folder: <run>/inspect/<head>_<way>way<shot>shot
    rep = feature_usage(ckpt, data=data, episodes=2, way=3, shot=1, query=2, device="cpu",
                        progress=False)
    assert rep.out_dir == ckpt.parent / "inspect" / "group_lasso_svm_3way1shot"


def test_unconverged_tasks_are_warned_once_per_shot(tiny, tmp_path):
    """The aggregation point warns once (with the count), however many batches missed."""
    from fewshot_sparse.heads import ConvergenceWarning

    data, ckpt = tiny
    with pytest.warns(ConvergenceWarning) as caught:
        rep = evaluate(ckpt, data=data, way=3, shots=(1, 2), query=2, episodes=6, seed=3,
                       tasks_per_batch=2, head_kwargs={"max_iter": 1, "tol": 1e-9},
                       device="cpu", progress=False, print_table=False, out_dir=tmp_path)
    ours = [str(w.message) for w in caught if "did not reach the solver's tolerance" in str(w.message)]
    assert len(ours) == 2
    for r, msg in zip(rep.results, ours):
        assert r.solver["unconverged"] > 0 and msg.startswith(f"3-way {r.shot}-shot evaluation")
        assert f"{r.solver['unconverged']} of 6 tasks" in msg


def test_solver_stats_and_warning_policy():
    import warnings

    from fewshot_sparse.engine.convergence import solver_stats, warn_unconverged
    from fewshot_sparse.heads import ConvergenceWarning

    s = solver_stats(torch.tensor([3, 7]), torch.tensor([1e-6, 2e-3]), torch.tensor([True, False]))
    assert s == {"mean_iterations": 5.0, "max_iterations": 7, "max_gap": pytest.approx(2e-3),
                 "unconverged": 1}
    assert solver_stats(None, None, None) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_unconverged("nothing missed", 0, 8, 0.0)  # no warning
    with pytest.warns(ConvergenceWarning, match="epoch 3: 2 of 8 tasks"):
        warn_unconverged("epoch 3", 2, 8, 1e-2)


def test_a_stale_saved_episode_list_is_an_error_not_a_silent_redraw(tiny, tmp_path):
    from fewshot_sparse.data.fixed_episodes import FixedEpisodes

    data, ckpt = tiny
    kw = dict(data=data, way=3, shots=(1,), query=2, episodes=4, seed=5, device="cpu",
              progress=False, print_table=False, episodes_dir=tmp_path / "eps",
              out_dir=tmp_path / "out")
    path = Path(evaluate(ckpt, **kw).results[0].episodes_file)
    saved = FixedEpisodes.load(path)
    FixedEpisodes(saved.indices, saved.n_way, saved.n_shot, saved.n_query, saved.split,
                  saved.seed, content_hash="sha256:" + "0" * 64).save(path)  # other data
    before = path.read_bytes()
    with pytest.raises(DataError, match="no longer matches the data.*delete it"):
        evaluate(ckpt, **kw)
    assert path.read_bytes() == before  # left as it was
    FixedEpisodes(saved.indices, saved.n_way, saved.n_shot, saved.n_query, saved.split,
                  saved.seed + 1, saved.content_hash).save(path)  # other settings
    with pytest.raises(DataError, match="holds other episodes"):
        evaluate(ckpt, **kw)
