"""fewshot-sparse: few-shot meta-learning with sparse linear base learners.

Imports go down one stack: cli -> api -> apps -> engine -> model -> heads, encoders ->
implicit -> solvers -> config -> errors, with data and analysis beside it (README, "Layout";
tests/test_layering.py checks it).
"""

__version__ = "0.1.0"

# The Python API (fewshot_sparse/api.py), loaded on first use so that importing a low
# layer such as ``fewshot_sparse.solvers`` does not pull in the whole engine.
_API = ("prepare", "train", "evaluate", "feature_usage", "load_config", "run_demo",
        "extract_features", "sweep", "predict", "episode_from_task", "episodes_from_tasks",
        "train_on_tasks", "evaluate_tasks")


def __getattr__(name):
    if name in _API:
        from fewshot_sparse import api

        return getattr(api, name)
    raise AttributeError(f"module 'fewshot_sparse' has no attribute {name!r}")


__all__ = list(_API)
