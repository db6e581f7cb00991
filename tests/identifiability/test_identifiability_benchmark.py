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
