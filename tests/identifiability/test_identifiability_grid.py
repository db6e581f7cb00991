"""A grid of benchmark conditions: one table, finished conditions read back, not rerun."""

from fewshot_sparse.identifiability.grid import run_grid

TINY = ["steps=2", "test_tasks=4", "tasks_per_batch=2", "eval_points=40", "seeds=[0]",
        "lambda1_grid=[1.0]", "baselines=[]"]


def test_grid_table_and_resume(tmp_path):
    conditions = {"base": [], "k=3": ["k=3"]}
    res = run_grid("reduced", conditions, tmp_path, overrides=TINY, progress=False)
    assert [(r["condition"], r["head"]) for r in res["rows"]] == [
        ("base", "input"), ("base", "group_lasso_svm"), ("k=3", "input"), ("k=3", "group_lasso_svm")]
    assert "| k=3 | group_lasso_svm(l1=1) |" in res["table"]
    assert (tmp_path / "grid.md").read_text().strip() == res["table"]
    stamp = (tmp_path / "k=3" / "results.json").stat().st_mtime_ns
    again = run_grid("reduced", conditions, tmp_path, overrides=TINY, progress=False)
    assert again["table"] == res["table"]
    assert (tmp_path / "k=3" / "results.json").stat().st_mtime_ns == stamp  # read back
    changed = run_grid("reduced", {"k=3": ["k=3", "steps=1"]}, tmp_path, overrides=TINY,
                       progress=False)
    assert (tmp_path / "k=3" / "results.json").stat().st_mtime_ns != stamp  # config changed: rerun
    assert len(changed["rows"]) == 2
