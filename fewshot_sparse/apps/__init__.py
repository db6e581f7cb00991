"""Applications: the jobs built on the engine (evaluate, inspect, demo; the
identifiability benchmark lives in ``fewshot_sparse.identifiability``).
``fewshot_sparse.api`` is their public face."""
