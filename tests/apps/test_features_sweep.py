"""The feature cache and the lambda path: the encoder runs once; the sweep fits heads on
the cached episodes only, agrees with eval on the same episodes, and writes its files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fewshot_sparse.api import evaluate, extract_features, sweep
from fewshot_sparse.apps.features import FeatureCache
from fewshot_sparse.cli import main
from fewshot_sparse.data import FixedEpisodes, read_manifest
from fewshot_sparse.engine.loading import load_model
from fewshot_sparse.model import EpisodicModel

KW = dict(way=3, query=2, episodes=6, progress=False, device="cpu")


@pytest.fixture(scope="module")
def cache32(glyph_run, tmp_path_factory):
    run_dir, _ = glyph_run
    return extract_features(run_dir, tmp_path_factory.mktemp("f") / "feats", shots=(1, 2),
                            dtype="float32", **KW)


def test_cache_holds_the_encoder_features_of_the_eval_episodes(glyph_run, cache32, tmp_path):
    run_dir, data = glyph_run
    meta = cache32.meta
    assert cache32.shots == [1, 2] and meta["n_features"] == 8
    assert meta["data_hash"] == read_manifest(data)["content_hash"]
    assert meta["input_shape"] == [1, 16, 16] and meta["head"]["name"] == "group_lasso_svm"
    shot = cache32.shot(2)
    assert shot.support.shape == (6, 6, 8) and shot.query.shape == (6, 6, 8)
    assert isinstance(shot.support, np.memmap)
    # The same episodes eval draws from this seed, encoded by the same model.
    fixed = FixedEpisodes.load(cache32.root / "2shot" / "episodes.npz")
    rep = evaluate(run_dir, shots=[2], out_dir=tmp_path, print_table=False,
                   episodes_dir=cache32.root / "2shot_eval", **KW)
    saved = FixedEpisodes.load(rep.result(2).episodes_file)
    np.testing.assert_array_equal(saved.indices, fixed.indices)
    model, *_ = load_model(run_dir)
    from fewshot_sparse.apps.evaluate import open_for_eval
    from fewshot_sparse.engine.protocol import protocol_batches

    ctx = open_for_eval(run_dir, device="cpu")
    batch = next(iter(protocol_batches(ctx.split, fixed, 6)))
    with torch.no_grad():
        s, q = ctx.model.eval().features(ctx.normalize(batch))
    np.testing.assert_allclose(shot.support, s.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(shot.query, q.numpy(), rtol=1e-5, atol=1e-5)


def test_sweep_never_runs_the_encoder_and_matches_eval(glyph_run, cache32, monkeypatch,
                                                       tmp_path):
    run_dir, _ = glyph_run
    ref = {lam: evaluate(run_dir, shots=[1, 2], head_kwargs={"lambda1": lam, "tol": 1e-5,
                                                             "max_iter": 5000},
                         out_dir=tmp_path / f"eval{lam}", print_table=False, **KW)
           for lam in (0.02, 0.5)}

    def no_encoder(*a, **k):
        raise AssertionError("the sweep ran the encoder")

    monkeypatch.setattr(EpisodicModel, "encode", no_encoder)
    rep = sweep(cache32.root, lambda1_grid=[0.5, 0.02], head_kwargs={"tol": 1e-5,
                                                                    "max_iter": 5000},
                out_dir=tmp_path / "sw", progress=False, print_table=False, device="cpu")
    path = {(p.shot, p.lambda1): p for p in rep.points if p.kind == "path"}
    for lam, eval_rep in ref.items():
        for shot in (1, 2):
            r, p = eval_rep.result(shot), path[(shot, lam)]
            assert p.accuracy == pytest.approx(r.accuracy, abs=1e-6)
            assert p.active_features == pytest.approx(r.active_features, abs=1e-6)
    assert path[(2, 0.5)].active_features <= path[(2, 0.02)].active_features
    refs = [p.head for p in rep.points if p.kind == "reference"]
    assert refs == ["svm_cs", "ridge", "protonet"] * 2


def test_ratio_grid_reaches_all_features_off(cache32, tmp_path):
    # The checkpoint's head smooths (s = 1): lambda_max is exact, so just above ratio 1
    # no feature is on (at exactly 1 the solver's tolerance may leave one barely on).
    rep = sweep(cache32, lambda_ratio_grid=[1.001, 0.6, 0.05], reference_heads=(),
                head_kwargs={"tol": 1e-6, "max_iter": 20000}, out_dir=tmp_path / "r",
                progress=False, print_table=False, device="cpu")
    assert rep.lambda_max == "exact"
    by = {(p.shot, p.lambda_ratio): p for p in rep.points}
    for shot in (1, 2):
        assert by[(shot, 1.001)].active_features == 0
        assert by[(shot, 0.05)].active_features > by[(shot, 0.6)].active_features > 0
        assert by[(shot, 0.05)].mean_lambda1 < by[(shot, 0.6)].mean_lambda1


def test_sweep_files_and_tensorboard(cache32, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    rep = sweep(cache32, lambda1_grid=[0.3, 0.1, 0.03], reference_heads=("protonet",),
                out_dir=tmp_path / "sw", progress=False, print_table=False, device="cpu")
    rows = list(csv.DictReader(Path(rep.files["csv"]).read_text().splitlines()))
    assert len(rows) == 2 * (3 + 1) and rows[0]["head"] == "group_lasso_svm"
    record = json.loads(Path(rep.files["json"]).read_text())
    assert record["grid"] == "lambda1" and len(record["points"]) == 8
    assert Path(rep.files["png"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    acc = EventAccumulator(rep.files["tensorboard"])
    acc.Reload()
    steps = [e.step for e in acc.Scalars("sweep_2shot/accuracy")]
    assert steps == [0, 1, 2]
    assert "reference_1shot/protonet_accuracy" in acc.Tags()["scalars"]


def test_cli_features_then_sweep(glyph_run, tmp_path, capsys):
    run_dir, _ = glyph_run
    feats = tmp_path / "feats"
    assert main(["features", "--checkpoint", str(run_dir), "--out", str(feats), "--way", "3",
                 "--shot", "1", "--query", "2", "--episodes", "4", "--quiet",
                 "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "3-way 1-shot: 4 episodes, 8 features" in out
    assert FeatureCache(feats).meta["dtype"] == "float16"
    assert main(["sweep", "--features", str(feats), "--lambda-ratio-grid", "geom:0.05:1:4",
                 "--reference", "none", "--quiet", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "lambda_ratio grid, lambda_max exact" in out
    assert len(list(csv.DictReader((feats / "sweep" / "sweep.csv").read_text().splitlines()))) == 4


def test_bad_sweep_input_is_one_line(tmp_path, capsys, cache32):
    assert main(["sweep", "--features", str(tmp_path), "--lambda1-grid", "0.1"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"fewshot-sparse: error: {tmp_path}: not a feature cache (no features.json); "
        f"write one with `fewshot-sparse features`")
    assert main(["sweep", "--features", str(cache32.root), "--head", "protonet",
                 "--lambda1-grid", "0.1"]) == 2
    assert "head 'protonet' has no lambda1 to sweep" in capsys.readouterr().err
    assert main(["sweep", "--features", str(cache32.root), "--lambda1-grid", "0.1",
                 "--shot", "5"]) == 2
    assert "no 5-shot features (it has 1, 2)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["sweep", "--features", "x", "--lambda1-grid", "0.1", "--lambda-ratio-grid", "1"])


def test_features_refuse_a_foreign_folder(glyph_run, tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("keep me")
    assert main(["features", "--checkpoint", str(glyph_run[0]), "--out", str(tmp_path),
                 "--episodes", "2", "--way", "3", "--shot", "1", "--query", "2"]) == 2
    assert "is not a feature cache; refusing to overwrite it" in capsys.readouterr().err
    assert (tmp_path / "mine.txt").read_text() == "keep me"
