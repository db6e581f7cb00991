"""Outputs never overwrite each other or the user's files, and an output folder that
cannot be written is reported (one line) before the work is done."""

import json

import pytest

from fewshot_sparse.apps.evaluate import evaluate
from fewshot_sparse.apps.inspect import feature_usage
from fewshot_sparse.cli import main
from fewshot_sparse.config import config_from_dict
from fewshot_sparse.engine.train import train
from fewshot_sparse.errors import OutputError

EVAL = dict(way=3, shots=(1,), query=2, episodes=2, device="cpu", progress=False,
            print_table=False)


@pytest.fixture(scope="module")
def ckpt(tiny_cache, tmp_path_factory):
    """One tiny trained run shared by this module's tests (each writes elsewhere)."""
    cfg = config_from_dict({
        "data": {"root": str(tiny_cache), "image_size": 16},
        "encoder": {"name": "conv4", "kwargs": {"in_channels": 1, "hidden": 8}},
        "head": {"name": "group_lasso_svm", "kwargs": {"lambda1": 0.05, "max_iter": 300}},
        "train": {"epochs": 1, "episodes_per_epoch": 2, "tasks_per_batch": 2, "n_way": 3,
                  "n_shot": 2, "n_query": 2, "lr_milestones": [], "lr_factors": [],
                  "device": "cpu"},
        "val": {"n_way": 3, "n_shot": 1, "n_query": 2, "episodes": 2, "tasks_per_batch": 2},
        "out_dir": str(tmp_path_factory.mktemp("outsafety") / "run")})
    return train(cfg, progress=False) / "last.pt"


def test_eval_with_other_head_settings_does_not_overwrite(ckpt, tmp_path):
    out = tmp_path / "out"
    first = evaluate(ckpt, out_dir=out, head_kwargs={"lambda1": 0.05}, **EVAL)
    text = (out / "eval_group_lasso_svm_3way.json").read_text()
    with pytest.raises(OutputError, match="other settings.*head_kwargs.*--overwrite"):
        evaluate(ckpt, out_dir=out, head_kwargs={"lambda1": 5.0}, **EVAL)
    assert (out / "eval_group_lasso_svm_3way.json").read_text() == text
    again = evaluate(ckpt, out_dir=out, head_kwargs={"lambda1": 0.05}, **EVAL)  # a rerun
    assert again.results[0].accuracy == first.results[0].accuracy
    evaluate(ckpt, out_dir=out, head_kwargs={"lambda1": 5.0}, overwrite=True, **EVAL)
    saved = json.loads((out / "eval_group_lasso_svm_3way.json").read_text())
    assert saved["head_kwargs"]["lambda1"] == 5.0


def test_eval_never_overwrites_a_foreign_file(ckpt, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "eval_group_lasso_svm_3way.json").write_text("my own notes")
    assert main(["eval", "--checkpoint", str(ckpt), "--out", str(out), "--way", "3",
                 "--shot", "1", "--query", "2", "--episodes", "2", "--quiet",
                 "--device", "cpu"]) == 2
    err = capsys.readouterr()
    assert "accuracy" not in err.out  # refused before the work
    assert err.err.count("\n") == 1 and "not an evaluation report" in err.err
    assert "refusing to overwrite" in err.err
    assert (out / "eval_group_lasso_svm_3way.json").read_text() == "my own notes"


def test_inspect_several_shots_one_folder_each(ckpt, tmp_path, capsys):
    out = tmp_path / "insp"
    assert main(["inspect", "--checkpoint", str(ckpt), "--shot", "1,2", "--out", str(out),
                 "--way", "3", "--query", "2", "--episodes", "2", "--quiet",
                 "--device", "cpu"]) == 0
    for shot in (1, 2):
        settings = json.loads((out / f"{shot}shot" / "inspect.json").read_text())
        assert settings["shot"] == shot
        assert (out / f"{shot}shot" / "heatmap.png").stat().st_size > 0


def test_inspect_refuses_other_settings_and_foreign_files(ckpt, tmp_path):
    kw = dict(way=3, query=2, episodes=2, device="cpu", progress=False)
    out = tmp_path / "insp"
    feature_usage(ckpt, shot=1, out_dir=out, **kw)
    with pytest.raises(OutputError, match="other settings.*shot 1 vs 2"):
        feature_usage(ckpt, shot=2, out_dir=out, **kw)
    assert json.loads((out / "inspect.json").read_text())["shot"] == 1
    feature_usage(ckpt, shot=2, out_dir=out, overwrite=True, **kw)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "summary.txt").write_text("my summary")
    with pytest.raises(OutputError, match="not a feature-usage report written by"):
        feature_usage(ckpt, shot=1, out_dir=mine, **kw)
    assert (mine / "summary.txt").read_text() == "my summary"


def test_eval_and_inspect_into_read_only_folder(ckpt, read_only_folder, capsys):
    ro = read_only_folder
    common = ["--checkpoint", str(ckpt), "--way", "3", "--shot", "1", "--query", "2",
              "--episodes", "2", "--quiet", "--device", "cpu"]
    for cmd in ("eval", "inspect"):
        assert main([cmd, *common, "--out", str(ro / "x")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "cannot write to" in err[0], err
        assert "read-only" in err[0] or "permission denied" in err[0]
    with pytest.raises(OutputError, match="cannot write to"):
        evaluate(ckpt, out_dir=ro, **EVAL)
