"""End to end through the command line on tiny settings:
prepare glyphs -> train one tiny epoch -> eval (two heads) -> inspect."""

import json

import pytest

from fewshot_sparse.cli import main

TINY = {
    "data": {"root": "data/glyphs", "dataset": "glyphs", "image_size": 32},
    "encoder": {"name": "conv4", "kwargs": {"in_channels": 1, "hidden": 8}},
    "head": {"name": "group_lasso_svm",
             "kwargs": {"lambda1": 0.05, "lambda2": 1.0, "max_iter": 200, "tol": 0.001}},
    "train": {"epochs": 1, "episodes_per_epoch": 8, "tasks_per_batch": 4, "n_way": 3,
              "n_shot": 1, "n_query": 2, "augment": False, "device": "cpu", "log_every": 1},
    "val": {"n_way": 3, "n_shot": 1, "n_query": 2, "episodes": 4, "tasks_per_batch": 4},
    "out_dir": "run",
}


@pytest.mark.slow
def test_prepare_train_eval_inspect(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    (tmp_path / "tiny.json").write_text(json.dumps(TINY))

    assert main(["prepare", "--dataset", "glyphs", "--out", "data/glyphs",
                 "--glyph-instances", "8", "--glyph-max-classes", "6"]) == 0
    assert (tmp_path / "data/glyphs/manifest.json").is_file()

    assert main(["train", "--config", "tiny.json", "--set", "train.seed=1"]) == 0
    assert (tmp_path / "run/last.pt").is_file()
    # a second plain train refuses to overwrite the run: one line, exit 2
    capsys.readouterr()
    assert main(["train", "--config", "tiny.json"]) == 2
    assert capsys.readouterr().err.startswith("fewshot-sparse: error:")

    eval_args = ["--way", "3", "--query", "2", "--episodes", "4", "--quiet"]
    assert main(["eval", "--checkpoint", "run/last.pt", "--shot", "1,2", *eval_args]) == 0
    out = capsys.readouterr().out
    assert "accuracy (95% CI)" in out
    report = json.loads((tmp_path / "run/eval/eval_group_lasso_svm_3way.json").read_text())
    assert [r["shot"] for r in report["results"]] == [1, 2]
    assert report["results"][0]["solver"]["max_iterations"] >= 1

    assert main(["eval", "--checkpoint", "run", "--shot", "1", "--head", "protonet",
                 *eval_args]) == 0
    assert (tmp_path / "run/eval/eval_protonet_3way.json").is_file()

    assert main(["inspect", "--checkpoint", "run/last.pt", "--shot", "2", *eval_args]) == 0
    folder = tmp_path / "run/inspect/group_lasso_svm_3way2shot"
    for name in ("heatmap.png", "active_counts.png", "usage_curve.png", "overlap.png",
                 "feature_usage.npz", "tasks.csv", "features.csv", "summary.txt"):
        assert (folder / name).stat().st_size > 0, name

    # a folder that is not a prepared cache
    capsys.readouterr()
    assert main(["eval", "--checkpoint", "run/last.pt", "--data", "run", *eval_args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a prepared cache" in err
