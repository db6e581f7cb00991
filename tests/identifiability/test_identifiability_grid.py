"""A grid of benchmark conditions: one table, finished conditions read back, not rerun."""

from fewshot_sparse.identifiability.grid import run_grid

TINY = ["steps=2", "test_tasks=4", "tasks_per_batch=2", "eval_points=40", "seeds=[0]",
        "lambda1_grid=[1.0]", "baselines=[]"]


def test_grid_table_and_resume(tmp_path):
    conditions = {"base": [], "k=3": ["k=3"]}
    res = run_grid("reduced", conditions, tmp_path, overrides=TINY, progress=False)
    assert [(r["condition"], r["head"]) for r in res["rows"]] == [
        ("base", "input"), ("base", "group_lasso_svm"), ("k=3", "input"), ("k=3", "group_lasso_svm")]
    assert "| k=3 | group_lasso_svm(l1=1) | 1 |" in res["table"]
    assert (tmp_path / "grid.md").read_text().strip() == res["table"]
    done = tmp_path / "k=3" / "seed=0" / "results.json"
    stamp = done.stat().st_mtime_ns
    again = run_grid("reduced", conditions, tmp_path, overrides=TINY, progress=False)
    assert again["table"] == res["table"]
    assert done.stat().st_mtime_ns == stamp  # read back, not rerun
    changed = run_grid("reduced", {"k=3": ["k=3", "steps=1"]}, tmp_path, overrides=TINY,
                       progress=False)
    assert done.stat().st_mtime_ns != stamp  # config changed: rerun
    assert len(changed["rows"]) == 2
    # a second seed left to another process: only the finished seed is summarised
    part = run_grid("reduced", {"k=3": ["k=3", "steps=1", "seeds=[0, 5]"]}, tmp_path,
                    overrides=TINY, only_seeds=[], progress=False)
    assert [r["n_seeds"] for r in part["rows"]] == [1, 1]
    assert not (tmp_path / "k=3" / "seed=5").exists()
