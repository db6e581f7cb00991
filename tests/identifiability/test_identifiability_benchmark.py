"""The identifiability benchmark: config handling and an end-to-end reduced run."""

import json

import pytest

from fewshot_sparse.errors import ConfigError
from fewshot_sparse.identifiability.benchmark import load_identifiability_config, run_identifiability


def test_config_presets_overrides_and_errors(tmp_path):
    cfg = load_identifiability_config("reduced", ["k=3", "seeds=[1,2]"])
    assert cfg.k == 3 and cfg.seeds == [1, 2] and cfg.m == 6
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"preset": "reduced", "steps": 3}))
    assert load_identifiability_config(str(path)).steps == 3
    with pytest.raises(ConfigError):
        load_identifiability_config(None, ["nonsense=1"])
    with pytest.raises(ConfigError):
        load_identifiability_config({"steps": "many"})
    with pytest.raises(ConfigError):
        load_identifiability_config("reduced", ["k=99"])


def test_reduced_benchmark_writes_table_and_plot(tmp_path):
    res = run_identifiability("reduced", out_dir=tmp_path, progress=False)
    for key in ("runs", "summary", "json", "plot"):
        assert (tmp_path / res["files"][key].split("/")[-1]).stat().st_size > 0
    heads = [s["head"] for s in res["summary"]]
    assert heads[0] == "input" and "group_lasso_svm" in heads and "ridge" in heads
    assert "MCC" in res["table"]
    data = json.loads((tmp_path / "results.json").read_text())
    assert len(data["rows"]) == len(res["rows"])


TINY_SHAPES = ["steps=2", "test_tasks=4", "tasks_per_batch=2", "eval_points=40",
               "conv_width=4", "hidden=[8]", "baselines=[\"protonet\"]", "lambda1_grid=[1.0]"]


def test_shapes_world_runs_end_to_end_with_the_same_metrics(tmp_path):
    res = run_identifiability(None, TINY_SHAPES, out_dir=tmp_path, progress=False, world="shapes")
    assert res["config"].world == "shapes" and res["config"].m == 7
    heads = [s["head"] for s in res["summary"]]
    assert heads == ["input", "group_lasso_svm", "protonet"]
    for row in res["rows"]:
        for key in ("mcc", "dci_d", "dci_c"):
            assert 0.0 <= row[key] <= 1.0 + 1e-9
        assert row["r2"] <= 1.0  # held-out R^2 may be negative
    assert (tmp_path / "identifiability.png").stat().st_size > 0


def test_world_flag_and_bad_values_name_the_key():
    assert load_identifiability_config("reduced", ["world=shapes", "m=7"]).world == "shapes"
    with pytest.raises(ConfigError, match="world"):
        load_identifiability_config(None, ["world=dsprites"])
    with pytest.raises(ConfigError, match="^m: "):
        load_identifiability_config("shapes", ["m=6"])
    with pytest.raises(ConfigError, match="task_supports"):
        load_identifiability_config("reduced", ["task_supports=99"])
    with pytest.raises(ConfigError, match="^solver_method: "):
        load_identifiability_config("reduced", ["solver_method=newton"])
    cfg = load_identifiability_config("reduced")
    assert cfg.solver_method == "ipm" and cfg.solver_tol <= 1e-4  # converged by default


def test_cli_world_shapes(tmp_path, capsys):
    from fewshot_sparse.cli import main

    args = ["identifiability", "--world", "shapes", "--quiet", "--out", str(tmp_path)]
    for o in TINY_SHAPES:
        args += ["--set", o]
    assert main(args) == 0
    assert "results.csv" in capsys.readouterr().out
